"""ONNX: export a marsam U-Net and run the exported file with onnxruntime (the ``onnx`` extra).

An ``.onnx`` file is a kind of :class:`~segmodels.predictors.Predictor`: ``load_predictor("m.onnx")``
returns an :class:`OnnxPredictor` (registered below for the ``.onnx`` suffix), so ``marsam
predict`` and every other consumer of ``load_predictor`` run it like a checkpoint.

:func:`export_onnx` traces a checkpoint's network with dynamic batch, height and width and
stores the checkpoint's metadata (model name and arguments, label spec, input normalisation)
in the ONNX file's ``metadata_props`` under ``marsam``, so an ``.onnx`` file predicts exactly
like the ``.safetensors`` it came from, without PyTorch. :class:`OnnxModel` is a callable on
N x C x H x W tensors returning logits, so segmodels' tiled inference runs it unchanged. The
traced graph has no data-dependent padding, so inputs are padded to the network's size
multiple here (reflect, as the PyTorch network does) and the logits cropped back.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_path
from .checkpoints import Checkpoint
from .errors import MarsamError
from .inference import class_probs, tiled_probs
from .labels import LabelSpec, get_label_spec
from .normalization import Normalization
from .predictors import register_predictor_kind

INSTALL_HINT = "install the onnx extra: pip install 'marsam[onnx]'"
OPSET = 17


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise MarsamError(f"ONNX support needs {module}; {INSTALL_HINT}") from None


def export_onnx(checkpoint: Checkpoint, path: str | os.PathLike, size: int = 256, opset: int = OPSET) -> Path:
    """Write ``checkpoint``'s network as ONNX (dynamic N, H, W) with marsam metadata; atomic."""
    onnx = _need("onnx")
    model = checkpoint.model
    if checkpoint.model_name == "sam_decoder":
        raise MarsamError("a sam_decoder reads SAM embeddings, not images; export a unet or attention_unet "
                          "checkpoint (the SAM encoder is not part of the export)")
    path = Path(path)
    if path.suffix != ".onnx":
        path = path.with_suffix(".onnx")
    in_ch = int(model.in_channels)
    multiple = int(getattr(model, "size_multiple", 1))
    size = max(multiple, size - size % multiple)
    was = model.training
    model.eval()
    meta = {"format": "marsam-onnx/1", "model": checkpoint.model_name, "model_args": checkpoint.model_args,
            "label_spec": checkpoint.label_spec.to_dict(),
            "normalization": Normalization.coerce(checkpoint.normalization).to_dict(),
            "size_multiple": multiple, "source": str(checkpoint.path or ""), "opset": opset}
    try:
        with atomic_path(path) as tmp, torch.no_grad():
            dummy = torch.zeros(1, in_ch, size, size, device=next(model.parameters()).device)
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # TracerWarning on the (static) padding branch
                torch.onnx.export(model, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=["image"], output_names=["logits"],
                                  dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                                "logits": {0: "batch", 2: "height", 3: "width"}})
            proto = onnx.load(str(tmp))
            entry = proto.metadata_props.add()
            entry.key, entry.value = "marsam", json.dumps(meta)
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
    finally:
        model.train(was)
    return path


class OnnxModel:
    """An exported marsam network run by onnxruntime: ``model(x)`` maps N x C x H x W to logits."""

    model_name = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, providers: list[str] | None = None):
        ort = _need("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise MarsamError(f"ONNX file {self.path} does not exist; check the path")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), opts,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:
            raise MarsamError(f"{self.path} is not a readable ONNX model ({str(e).splitlines()[0][:160]}); "
                              "export it again with marsam export-model --onnx") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get("marsam")
        if raw is None:
            raise MarsamError(f"{self.path} has no marsam metadata (label spec, normalisation); export it with "
                              "marsam export-model --onnx so predictions use the right classes and input scaling")
        self.meta = json.loads(raw)
        self.label_spec: LabelSpec = get_label_spec(self.meta["label_spec"])
        self.normalization = Normalization.coerce(self.meta.get("normalization"))
        self.size_multiple = int(self.meta.get("size_multiple", 1))
        self.in_channels = self.normalization.in_channels
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if (ph < h and pw < w) else "replicate")
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        out = self.session.run(None, {self.input_name: arr})[0]
        return torch.from_numpy(out[..., :h, :w])


class OnnxPredictor:
    """The ``.onnx`` kind of Predictor: no torch module; tiled like the PyTorch network."""

    module = None
    checkpoint = None

    def __init__(self, model: OnnxModel, label_spec: LabelSpec | None = None,
                 normalization: Normalization | dict | None = None):
        self.onnx = model
        self.label_spec = label_spec or model.label_spec
        self.normalization = Normalization.coerce(normalization, model.normalization)
        self.model_name = f"{model.meta.get('model', 'model')}.onnx"
        self.name = model.path.stem

    @classmethod
    def from_path(cls, path: Path, normalization=None, label_spec: LabelSpec | None = None, threads: int | None = None,
                  **_context) -> "OnnxPredictor":
        return cls(OnnxModel(path, threads=threads), label_spec, normalization)

    def probabilities(self, image: np.ndarray, *, tile: int = 512, overlap: int = 64, batch_size: int = 4,
                      device=None) -> np.ndarray:
        """K x H x W probabilities; onnxruntime runs on the CPU whatever ``device`` says."""
        x = self.normalization.to_model_input(image)
        h, w = x.shape[-2:]
        if h <= tile and w <= tile:
            probs = class_probs(self.onnx(x))[0].numpy()
        else:
            probs = tiled_probs(self.onnx, x, tile, overlap, torch.device("cpu"), batch_size)
        return np.ascontiguousarray(probs, np.float32)

    def probabilities_batch(self, images: list[np.ndarray]) -> np.ndarray:
        """N x K x H x W probabilities of same-sized images in one onnxruntime call."""
        x = torch.cat([self.normalization.to_model_input(im) for im in images])
        return np.ascontiguousarray(class_probs(self.onnx(x)).numpy(), np.float32)


register_predictor_kind(".onnx")(OnnxPredictor.from_path)
