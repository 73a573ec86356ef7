"""The explanation methods the explain widget offers, and how each map is scaled for display.

Every method is a call into :mod:`segmodels.explain` (captum underneath); this module only
records, per method, what the widget needs around that call:

- whether it explains one class (Grad-CAM, IG, LIME) or none (attention, entropy, MC dropout);
- its options and a count of the forward passes it will make, so the progress bar and the
  Cancel button (:meth:`~napari_plugin.predict.jobs.Job.watch`) work on captum calls that
  offer no callback;
- a FIXED display range, so that the same colour means the same thing for two models or two
  images: Grad-CAM is divided by its maximum (Selvaraju et al.'s normalisation) and shown on
  [0, 1]; the signed maps (IG, LIME) are divided by their largest magnitude and shown on
  [-1, 1] with a diverging colormap (the divisor is kept in the layer's metadata, so nothing
  is lost); attention gates are in [0, 1] by construction; entropy and MC-dropout mutual
  information are in nats on [0, log K].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from segmodels.predictors import Predictor
from segmodels.errors import MarsamError

from ..predict.jobs import Job

SIGNED, POSITIVE, UNIT, NATS = "signed", "positive", "unit", "nats"


@dataclass(frozen=True)
class Method:
    key: str
    title: str
    per_class: bool
    display: str                       # SIGNED, POSITIVE, UNIT or NATS
    forwards: Callable[[dict], int]    # forward passes the call makes, for the progress bar
    slow: bool = False


def _ceil(a: int, b: int) -> int:
    return -(-int(a) // max(1, int(b)))


METHODS: dict[str, Method] = {m.key: m for m in (
    Method("gradcam", "Grad-CAM", True, POSITIVE, lambda o: 3),
    Method("ig", "Integrated Gradients", True, SIGNED,
           lambda o: 4 + _ceil(o.get("steps", 32), o.get("internal_batch_size", 8)), slow=True),
    Method("lime", "LIME (SLIC superpixels)", True, SIGNED,
           lambda o: 2 + _ceil(o.get("n_samples", 200), o.get("perturbations_per_eval", 8)), slow=True),
    Method("attention", "attention gates", False, UNIT, lambda o: 1),
    Method("entropy", "predictive entropy", False, NATS, lambda o: 1),
    Method("mc-dropout", "MC dropout (mutual information)", False, NATS,
           lambda o: _ceil(o.get("samples", 20), o.get("batch_size", 4)), slow=True),
)}

DEFAULT_OPTIONS = {
    "gradcam": {"layer": None},
    "ig": {"steps": 32, "baseline": "black", "internal_batch_size": 8},
    "lime": {"n_samples": 200, "n_segments": 50, "perturbations_per_eval": 8},
    "attention": {},
    "entropy": {"tile": 512},
    "mc-dropout": {"samples": 20, "batch_size": 4},
}


@dataclass
class MapLayer:
    """One Image layer to show: scaled data, its fixed range and how to colour it."""
    name: str
    data: np.ndarray             # H x W, or G x H x W for the stack of attention gates
    limits: tuple[float, float]
    display: str
    metadata: dict = field(default_factory=dict)


def method_of(key: str) -> Method:
    if key not in METHODS:
        raise MarsamError(f"unknown explanation method {key!r}; choose one of {', '.join(METHODS)}")
    return METHODS[key]


def scale_for_display(arr: np.ndarray, display: str, num_classes: int) -> tuple[np.ndarray, tuple, float]:
    """(scaled map, fixed limits, divisor) as described in the module docstring."""
    arr = np.nan_to_num(np.asarray(arr, np.float32))
    if display == SIGNED:
        d = float(np.abs(arr).max())
        return (arr / d if d > 0 else arr), (-1.0, 1.0), d
    if display == POSITIVE:
        d = float(arr.max())
        return (arr / d if d > 0 else arr), (0.0, 1.0), d
    if display == UNIT:
        return np.clip(arr, 0.0, 1.0), (0.0, 1.0), 1.0
    return arr, (0.0, math.log(max(num_classes, 2))), 1.0


def _call(key: str, ckpt: Predictor, image: np.ndarray, target, o: dict):
    from segmodels import explain as E
    if key == "gradcam":
        return E.gradcam(ckpt, image, target, layer=o.get("layer") or None)
    if key == "ig":
        return E.integrated_gradients(ckpt, image, target, steps=int(o["steps"]), baseline=o["baseline"],
                                      internal_batch_size=int(o["internal_batch_size"]))
    if key == "lime":
        return E.lime(ckpt, image, target, n_samples=int(o["n_samples"]), n_segments=int(o["n_segments"]),
                      perturbations_per_eval=int(o["perturbations_per_eval"]))
    if key == "attention":
        return E.attention_maps(ckpt, image)
    if key == "entropy":
        return E.entropy_map(ckpt, image, tile=int(o["tile"]))
    return E.mc_dropout_map(ckpt, image, samples=int(o["samples"]), batch_size=int(o["batch_size"]))


def explain(key: str, ckpt: Predictor, image: np.ndarray, target: int | str | None = None,
            options: dict | None = None, job: Job | None = None) -> list[MapLayer]:
    """Run method ``key`` on ``image`` and return the layers to show (one, or a map plus the
    stack of attention gates). ``job`` counts forward passes and stops them on Cancel."""
    m = method_of(key)
    if not ckpt.normalization.reads_pixels or ckpt.module is None:
        raise MarsamError(f"{short_name(ckpt)} reads SAM embeddings or has no torch network, so pixel "
                          "explanations do not apply to it; explain the student or the teacher (checkpoint file) instead")
    if m.per_class and target is None:
        raise MarsamError(f"{m.title} explains one class; choose the class to explain")
    o = dict(DEFAULT_OPTIONS[key])
    o.update({k: v for k, v in (options or {}).items() if k in o})
    job = job or Job(m.title)
    with job.watch(ckpt.module, m.forwards(o)):
        ex = _call(key, ckpt, image, target, o)
    k = ckpt.label_spec.num_classes
    data, limits, divisor = scale_for_display(ex.map, m.display, k)
    who = short_name(ckpt)
    name = f"{m.key}: {ex.class_name}" if ex.class_name else m.key
    meta = {**{k2: v for k2, v in ex.extras.items() if isinstance(v, (int, float, str, bool))},
            "marsam_map": True, "method": m.key, "model": who, "class": ex.class_name, "divisor": divisor}
    out = [MapLayer(name=f"{name} [{who}]", data=data, limits=limits, display=m.display, metadata=meta)]
    if key == "attention":
        gates = np.stack(ex.extras["gates"]).astype(np.float32)
        out.append(MapLayer(name=f"attention gates [{who}]", data=np.clip(gates, 0, 1), limits=(0.0, 1.0),
                            display=UNIT, metadata=dict(meta, gate_names=list(ex.extras["gate_names"]))))
    return out


def short_name(ckpt: Predictor) -> str:
    """How layers name the model, so maps of two models can sit side by side."""
    return ckpt.name
