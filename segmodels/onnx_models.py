"""ONNX: export a marsam U-Net and run the exported file with onnxruntime (the ``onnx`` extra).

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
from .checkpoints import DEFAULT_NORMALIZATION, Checkpoint
from .errors import MarsamError
from .labels import LabelSpec, get_label_spec

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
            "normalization": dict(checkpoint.normalization or DEFAULT_NORMALIZATION),
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
        self.normalization: dict = dict(self.meta.get("normalization") or DEFAULT_NORMALIZATION)
        self.size_multiple = int(self.meta.get("size_multiple", 1))
        self.in_channels = int(self.normalization.get("in_channels", 1))
        self.input_name = self.session.get_inputs()[0].name

    @property
    def name(self) -> str:
        return f"{self.meta.get('model', 'model')} onnx ({self.path.stem})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if (ph < h and pw < w) else "replicate")
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        out = self.session.run(None, {self.input_name: arr})[0]
        return torch.from_numpy(out[..., :h, :w])


def is_onnx(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".onnx")
