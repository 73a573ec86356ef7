"""Which model predicts, and its prediction of one image: plain calls into segmodels and annotate.

Two sources, as the predict widget offers them: the pretrained AI4Mars student shipped with
distill, the default when it is installed, or any marsam checkpoint file (student, teacher, or a
domain decoder). Either becomes a ``segmodels.predictors.Predictor`` (``load_predictor``); a
domain decoder segments the current image's SAM embedding instead of its pixels, so it is given
the annotator's SAM model and embedding cache (annotate's ``SamDecoderPredictor``). U-Nets tile
large images (``segmodels.inference``); uncertainty comes from ``segmodels.uncertainty``. No Qt here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segmodels.checkpoints import Checkpoint
from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec
from segmodels.predictors import Predictor, check_label_spec, load_predictor, pretrained_models, with_context
from segmodels.uncertainty import single_pass_maps

PRETRAINED_STUDENT = "ai4mars-student"


@dataclass
class PredictionResult:
    """Labels and per-pixel uncertainty of one image, with what produced them."""
    labels: np.ndarray        # H x W uint8 class ids
    probs: np.ndarray         # K x H x W float32
    entropy: np.ndarray       # H x W, nats in [0, log K]
    confidence: np.ndarray    # H x W, max class probability in [1/K, 1]
    label_spec: LabelSpec
    model_name: str
    seconds: float

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[0])

    @property
    def mean_entropy(self) -> float:
        return float(self.entropy.mean())


def pretrained_available() -> bool:
    """True when distill ships the pretrained student (then it is the widgets' default model)."""
    import distill.pretrained  # noqa: F401  registers the shipped models (as its entry point does)
    return PRETRAINED_STUDENT in pretrained_models()


def load_model(source: str | Path | Checkpoint | Predictor | None = None) -> Predictor:
    """The Predictor of ``source``: None or the pretrained name -> distill's shipped student; a
    path -> that marsam checkpoint; a Checkpoint or a Predictor -> itself (see
    ``segmodels.predictors.load_predictor``, which does the work)."""
    if source is None or str(source) in ("", ".", PRETRAINED_STUDENT):
        if not pretrained_available():
            raise MarsamError(f"the pretrained student {PRETRAINED_STUDENT!r} is not installed with this marsam; "
                              "choose a checkpoint file instead")
        return load_predictor(PRETRAINED_STUDENT)
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise MarsamError(f"checkpoint {source} does not exist; choose a .safetensors file written by marsam "
                          "(marsam train) or leave it empty for the pretrained student")
    return load_predictor(source)


def model_label(p: Predictor) -> str:
    return f"{p.model_name} ({p.name})" if p.checkpoint is not None and p.checkpoint.path else p.model_name


def sam_of(engine):
    """(SamModel, EmbeddingCache) of an annotate SamEngine, or (None, None) for GrabCut."""
    return getattr(engine, "model", None), getattr(engine, "cache", None)


def run_prediction(model: Predictor | Checkpoint, image: np.ndarray, engine=None, tile: int = 1024,
                   label_spec: LabelSpec | None = None) -> PredictionResult:
    """The prediction of ``model`` on ``image``; a model that reads SAM embeddings (the domain
    decoder) gets the annotator's SAM and embedding cache from ``engine``."""
    sam, cache = sam_of(engine)
    p = with_context(load_predictor(model), sam=sam, cache=cache)
    if label_spec is not None:
        check_label_spec(p, label_spec, where="the session uses",
                         fix=f"choose a model trained with label spec {label_spec.name!r}")
    t0 = time.perf_counter()
    probs = np.ascontiguousarray(p.probabilities(image, tile=tile, overlap=min(64, tile // 4)), np.float32)
    labels, entropy, confidence = single_pass_maps(probs)      # one pass over the same probabilities
    return PredictionResult(labels=labels, probs=probs, entropy=entropy, confidence=confidence,
                            label_spec=p.label_spec, model_name=model_label(p),
                            seconds=time.perf_counter() - t0)
