"""Which model predicts, and its prediction of one image: plain calls into segmodels, distill and annotate.

Three sources, as the predict widget offers them:

- the pretrained AI4Mars student shipped with distill (``distill.load_pretrained``), the default
  when it is installed;
- any marsam checkpoint file (student, teacher, or a domain decoder);
- a domain decoder, which segments the current image's SAM embedding instead of its pixels: the
  embedding comes from annotate's cache (the annotator computed it already when SAM is loaded)
  and ``distill.decoder.decoder_image_logits`` maps the decoder's logits back from SAM's padded
  1024 frame (``segmodels.networks.embedding_logits_to_image``), averaging the tiles of a large
  image where they overlap.

U-Nets go through ``segmodels.inference.predict`` (overlapping tiles for large images);
uncertainty through ``segmodels.uncertainty``. No Qt here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segmodels.checkpoints import Checkpoint, load_checkpoint
from segmodels.errors import MarsamError
from segmodels.inference import predict
from segmodels.labels import LabelSpec
from segmodels.uncertainty import max_prob_uncertainty, predictive_entropy

PRETRAINED_STUDENT = "ai4mars-student"
DECODER = "sam_decoder"


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
    from distill import list_pretrained
    return PRETRAINED_STUDENT in list_pretrained()


def load_model(source: str | Path | Checkpoint | None = None) -> Checkpoint:
    """A Checkpoint from ``source``: None or the pretrained name -> distill's shipped student;
    a path -> that marsam checkpoint; a Checkpoint -> itself."""
    if isinstance(source, Checkpoint):
        return source
    if source is None or str(source) in ("", ".", PRETRAINED_STUDENT):
        from distill import load_pretrained
        if not pretrained_available():
            raise MarsamError(f"the pretrained student {PRETRAINED_STUDENT!r} is not installed with this marsam; "
                              "choose a checkpoint file instead")
        return load_pretrained(PRETRAINED_STUDENT)
    path = Path(source)
    if not path.is_file():
        raise MarsamError(f"checkpoint {path} does not exist; choose a .safetensors file written by marsam "
                          "(marsam train) or leave it empty for the pretrained student")
    return load_checkpoint(path)


def is_decoder(ckpt: Checkpoint) -> bool:
    return ckpt.model_name == DECODER


def _check_spec(ckpt: Checkpoint, spec: LabelSpec | None) -> None:
    if spec is not None and list(ckpt.label_spec.classes) != list(spec.classes):
        raise MarsamError(f"the model predicts classes {list(ckpt.label_spec.classes)} but the session uses "
                          f"{list(spec.classes)}; choose a model trained with label spec {spec.name!r}")


def _result(probs: np.ndarray, ckpt: Checkpoint, t0: float) -> PredictionResult:
    probs = np.ascontiguousarray(probs, np.float32)
    return PredictionResult(labels=probs.argmax(axis=0).astype(np.uint8), probs=probs,
                            entropy=np.asarray(predictive_entropy(probs), np.float32),
                            confidence=(1.0 - np.asarray(max_prob_uncertainty(probs), np.float32)),
                            label_spec=ckpt.label_spec, model_name=model_label(ckpt),
                            seconds=time.perf_counter() - t0)


def model_label(ckpt: Checkpoint) -> str:
    return f"{ckpt.model_name} ({Path(ckpt.path).stem})" if ckpt.path else ckpt.model_name


def predict_image(ckpt: Checkpoint, image: np.ndarray, tile: int = 1024, device=None,
                  label_spec: LabelSpec | None = None) -> PredictionResult:
    """Prediction of a U-Net checkpoint on ``image`` (tiled by segmodels for large images)."""
    if is_decoder(ckpt):
        raise MarsamError("a domain decoder segments SAM embeddings: predict it with predict_embedding "
                          "(the widget's 'domain decoder' source) and a loaded SAM model")
    _check_spec(ckpt, label_spec)
    t0 = time.perf_counter()
    pred = predict(ckpt, image, tile=tile, overlap=min(64, tile // 4), device=device)
    return _result(pred.probs, ckpt, t0)


def predict_embedding(ckpt: Checkpoint, sam_model, image: np.ndarray, cache=None,
                      label_spec: LabelSpec | None = None) -> PredictionResult:
    """Prediction of a domain-decoder checkpoint on ``image``'s SAM embedding (annotate's cache)."""
    if not is_decoder(ckpt):
        raise MarsamError(f"{model_label(ckpt)} is not a domain decoder; predict it on the image instead")
    if sam_model is None:
        raise MarsamError("the domain decoder needs SAM image embeddings: load a SAM model in the annotator "
                          "(vit_b, vit_l or vit_h) first")
    _check_spec(ckpt, label_spec)
    t0 = time.perf_counter()
    from distill.decoder import decoder_image_probs
    return _result(decoder_image_probs(ckpt.model, sam_model, image, cache), ckpt, t0)


def sam_of(engine):
    """(SamModel, EmbeddingCache) of an annotate SamEngine, or (None, None) for GrabCut."""
    return getattr(engine, "model", None), getattr(engine, "cache", None)


def run_prediction(ckpt: Checkpoint, image: np.ndarray, engine=None, tile: int = 1024,
                   label_spec: LabelSpec | None = None) -> PredictionResult:
    """The right path for ``ckpt``: decoder on the SAM embedding, anything else on the pixels."""
    if is_decoder(ckpt):
        sam, cache = sam_of(engine)
        return predict_embedding(ckpt, sam, image, cache, label_spec)
    return predict_image(ckpt, image, tile=tile, label_spec=label_spec)
