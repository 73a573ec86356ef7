"""A trained model that turns an image into class probabilities: the one typed home.

A :class:`Predictor` has a name, a label spec, an input :class:`~segmodels.normalization.Normalization`,
the torch module behind it (when there is one: explanations and the batched evaluation need it)
and ``probabilities(image)``: K x H x W float32 class probabilities of an image of any size.
:func:`load_predictor` builds one from a checkpoint path, a pretrained name, a
:class:`~segmodels.checkpoints.Checkpoint`, a marsam network or a Predictor; evaluation,
distillation, explanations, prediction, the demo and the napari widgets all go through it.

Kinds of predictor
------------------
The kind is chosen in one place, the registry below, by the network name a checkpoint records
(``Checkpoint.model_name``) or by a file suffix:

- any network of :mod:`segmodels.networks` that reads images (the U-Nets) -> :class:`NetworkPredictor`
  (this module; tiles large images, see :mod:`segmodels.inference`);
- ``"sam_decoder"`` -> ``annotate.decoder_predictor.SamDecoderPredictor`` (it needs SAM and the
  embedding cache, which annotate owns; annotate registers it when imported).

How to add a model kind (an ONNX export, a new network):

1. write a class with the :class:`Predictor` attributes and ``probabilities`` (its ``module``
   is None when there is no torch module, as for ONNX);
2. register a factory ``factory(source, **context) -> Predictor`` with
   ``@register_predictor_kind(key)``. ``key`` is a network name stored in checkpoints (the
   factory gets the :class:`Checkpoint` or the module) or a file suffix such as ``".onnx"``
   (the factory gets the :class:`~pathlib.Path`). ``context`` holds what the caller passed to
   :func:`load_predictor` (``normalization``, ``label_spec``, ``device``, ``sam``, ``cache``);
   ignore what you do not use;
3. make sure the registering module is imported: from its package's ``__init__``, and under the
   ``marsam.predictors`` entry-point group in ``pyproject.toml`` so that :func:`load_predictor`
   finds it even when nobody imported the package (segmodels never imports the packages above it).

Pretrained models shipped by a package are found the same way: the package calls
:func:`register_pretrained` with a function listing ``{name: path}``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from .checkpoints import Checkpoint, load_checkpoint
from .errors import MarsamError
from .inference import network_probabilities
from .labels import AI4MARS, LabelSpec, spec_from_names
from .normalization import DEFAULT_NORMALIZATION, Normalization


@dataclass
class Prediction:
    probs: np.ndarray   # K x H x W float32 class probabilities (K = 2 for a single-logit head)
    labels: np.ndarray  # H x W uint8 argmax class ids


@runtime_checkable
class Predictor(Protocol):
    """What every model kind offers (see the module docstring)."""

    model_name: str                   # registry name of the network ("unet", "sam_decoder", ...)
    name: str                         # how the user knows it: the file stem, else the model name
    label_spec: LabelSpec
    normalization: Normalization
    module: nn.Module | None          # the torch network, when there is one
    checkpoint: Checkpoint | None     # where it came from (path, training summary), if a checkpoint

    def probabilities(self, image: np.ndarray, *, tile: int = 512, overlap: int = 64, batch_size: int = 4,
                      device: str | torch.device | None = None) -> np.ndarray:
        """K x H x W float32 class probabilities of ``image`` (H x W [x 3|4], any dtype marsam reads)."""
        ...


Factory = Callable[..., Predictor]
_KINDS: dict[str, Factory] = {}
_PRETRAINED: list[Callable[[], dict[str, Path]]] = []
_PLUGINS_LOADED = False


def register_predictor_kind(key: str):
    """Decorator: ``factory`` builds the predictors of network ``key`` or of files with suffix ``key``."""
    def deco(factory: Factory) -> Factory:
        _KINDS[key] = factory
        return factory
    return deco


def register_pretrained(lister: Callable[[], dict[str, Path]]) -> None:
    """``lister()`` returns the pretrained models a package ships, ``{name: checkpoint path}``."""
    if lister not in _PRETRAINED:
        _PRETRAINED.append(lister)


def _load_plugins() -> None:
    """Import the modules listed under the ``marsam.predictors`` entry points (once)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points
    for ep in entry_points(group="marsam.predictors"):
        try:
            ep.load()
        except ImportError:   # an optional part is not installed: its kinds stay unavailable
            pass


def _kind(key: str) -> Factory | None:
    if key not in _KINDS:
        _load_plugins()
    return _KINDS.get(key)


def pretrained_models() -> dict[str, Path]:
    """Every pretrained model the installed packages ship, by name."""
    _load_plugins()
    found: dict[str, Path] = {}
    for lister in _PRETRAINED:
        found.update(lister())
    return found


def label_spec_for(module: nn.Module, label_spec: LabelSpec | None = None) -> LabelSpec:
    """``label_spec``, or the spec a bare network most likely predicts (AI4Mars for 4 classes)."""
    if label_spec is not None:
        return label_spec
    k = int(getattr(module, "num_classes", 0))
    if k == AI4MARS.num_classes:
        return AI4MARS
    return spec_from_names([f"class_{i}" for i in range(max(k, 1))], name="generic")


def _unwrap(source) -> tuple[nn.Module, Checkpoint | None]:
    if isinstance(source, Checkpoint):
        return source.model, source
    if isinstance(source, nn.Module):
        return source, None
    raise MarsamError(f"expected a marsam model or Checkpoint, got {type(source).__name__}")


def base_normalization(module: nn.Module, checkpoint: Checkpoint | None,
                       normalization: Normalization | dict | None) -> Normalization:
    """explicit > the checkpoint's > the network's own default."""
    default = module.default_normalization() if hasattr(module, "default_normalization") else DEFAULT_NORMALIZATION
    if checkpoint is not None:
        default = Normalization.coerce(checkpoint.normalization, default)
    return Normalization.coerce(normalization, default)


@dataclass
class NetworkPredictor:
    """A segmodels network on the image's pixels: the U-Net kind (student, teacher)."""

    module: nn.Module
    label_spec: LabelSpec
    normalization: Normalization
    checkpoint: Checkpoint | None = None

    @classmethod
    def from_source(cls, source: Checkpoint | nn.Module, normalization=None, label_spec: LabelSpec | None = None,
                    **_context) -> "NetworkPredictor":
        module, ckpt = _unwrap(source)
        spec = label_spec or (ckpt.label_spec if ckpt is not None else label_spec_for(module))
        return cls(module, spec, base_normalization(module, ckpt, normalization), ckpt)

    @property
    def model_name(self) -> str:
        if self.checkpoint is not None:
            return self.checkpoint.model_name
        return getattr(self.module, "model_name", "") or type(self.module).__name__

    @property
    def name(self) -> str:
        path = self.checkpoint.path if self.checkpoint is not None else None
        return Path(path).stem if path else self.model_name

    def probabilities(self, image: np.ndarray, *, tile: int = 512, overlap: int = 64, batch_size: int = 4,
                      device: str | torch.device | None = None) -> np.ndarray:
        if not self.normalization.reads_pixels:
            raise MarsamError(f"the {self.model_name} model reads SAM image embeddings, not images; predict it "
                              "with annotate's embeddings (install annotate: it registers the SAM-decoder "
                              "predictor, which takes the SAM model)")
        x = self.normalization.to_model_input(image)
        return network_probabilities(self.module, x, tile=tile, overlap=overlap, batch_size=batch_size, device=device)


def load_predictor(source, *, normalization: Normalization | dict | None = None,
                   label_spec: LabelSpec | None = None, device: str | torch.device | None = None,
                   **context) -> Predictor:
    """The Predictor of ``source``: a checkpoint path, a pretrained name, a Checkpoint, a marsam
    network or a Predictor (returned as is). ``normalization`` and ``label_spec`` override the
    checkpoint's; ``device`` is where a checkpoint file is loaded; other keyword arguments go to
    the kind's factory (the SAM decoder takes ``sam`` and ``cache``)."""
    if isinstance(source, Predictor) and not isinstance(source, nn.Module):
        return source
    if isinstance(source, (str, os.PathLike)):
        source = _open(source, device)
    if isinstance(source, (Path,)):
        factory = _kind(source.suffix.lower())
        return factory(source, normalization=normalization, label_spec=label_spec, device=device, **context)
    module, ckpt = _unwrap(source)
    key = ckpt.model_name if ckpt is not None else getattr(module, "model_name", "")
    factory = _kind(key) or NetworkPredictor.from_source
    return factory(source, normalization=normalization, label_spec=label_spec, device=device, **context)


def _open(source: str | os.PathLike, device) -> Checkpoint | Path:
    """A checkpoint file, a file of a registered suffix (returned as a Path) or a pretrained name."""
    path = Path(source)
    if not path.is_file():
        shipped = pretrained_models()
        if str(source) not in shipped:
            names = ", ".join(sorted(shipped)) or "none installed"
            raise MarsamError(f"checkpoint {path} does not exist; give a .safetensors file written by marsam "
                              f"(marsam train) or a pretrained model name ({names})")
        path = Path(shipped[str(source)])
    if path.suffix and _kind(path.suffix.lower()) is not None:
        return path
    return load_checkpoint(path, device=device or "cpu")


def check_label_spec(predictor: Predictor, spec: LabelSpec, what: str = "the model",
                     where: str = "the data is labelled with",
                     fix: str = "use a model trained with the same label spec") -> None:
    """Refuse a predictor whose classes differ from ``spec``'s (names when it came from a
    checkpoint; the class count for a bare network, whose names are unknown)."""
    if predictor.checkpoint is None:
        k = int(getattr(predictor.module, "num_classes", spec.num_classes))
        if k != spec.num_classes:
            raise MarsamError(f"{what} predicts {k} classes but {where} {spec.num_classes}; {fix}")
        return
    if list(predictor.label_spec.classes) != list(spec.classes):
        raise MarsamError(f"{what} predicts classes {list(predictor.label_spec.classes)} but {where} "
                          f"{list(spec.classes)}; {fix}")


def with_context(predictor: Predictor, **context) -> Predictor:
    """The same model with other context for its kind (e.g. ``sam``/``cache`` of the SAM decoder,
    which the napari annotator may change between calls); cheap: nothing is read from disk."""
    source = predictor.checkpoint if predictor.checkpoint is not None else predictor.module
    if source is None:
        return predictor
    return load_predictor(source, normalization=predictor.normalization, label_spec=predictor.label_spec,
                          **context)


def predict(model, image: np.ndarray, normalization: Normalization | dict | None = None,
            tile: int = 512, overlap: int = 64, device: str | torch.device | None = None,
            batch_size: int = 4) -> Prediction:
    """Class probabilities and labels of ``image`` (H x W [x 3|4], any dtype marsam reads).

    ``model``: anything :func:`segmodels.predictors.load_predictor` takes (a network, a
    Checkpoint, a checkpoint path, a Predictor). ``normalization`` overrides the checkpoint's.
    ``tile``/``overlap`` bound memory for large images; see the module docstring.
    """
    p = load_predictor(model, normalization=normalization)
    probs = p.probabilities(image, tile=tile, overlap=overlap, batch_size=batch_size, device=device)
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    labels = np.empty(probs.shape[1:], np.uint8)
    for r in range(0, labels.shape[0], 256):  # in row blocks: argmax's int64 result of a block only
        labels[r:r + 256] = probs[:, r:r + 256].argmax(axis=0)
    return Prediction(probs=probs, labels=labels)
