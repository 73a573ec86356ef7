"""Which model predicts: a checkpoint, a shipped model, an ``.onnx`` file or a domain decoder.

``open_predictor`` returns an object with ``name``, ``label_spec`` and ``probs(image)`` (K x H x W
float32 class probabilities of an H x W [x C] image of any size), plus ``probs_batch(images)`` for
same-sized small images (the CPU/GPU batch of ``marsam predict``) and ``mc_dropout(image)``
where the model has dropout. This is the shape of the project's ``Predictor``; until
``load_predictor`` exists (issue 13) this module is the one place that resolves a model source,
so the switch is made here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segmodels.checkpoints import Checkpoint, load_checkpoint
from segmodels.device import autocast, pick_device
from segmodels.errors import MarsamError
from segmodels.images import to_model_input
from segmodels.inference import class_probs, predict, tiled_probs
from segmodels.labels import LabelSpec
from segmodels.uncertainty.measures import EPS


class UNetPredictor:
    """A marsam image network (unet, attention_unet) through segmodels' tiled inference."""

    kind = "checkpoint"

    def __init__(self, ckpt: Checkpoint, device=None, tile: int = 512, overlap: int = 64, batch_size: int = 4):
        self.ckpt = ckpt
        self.device = pick_device(device)
        self.net = ckpt.model.to(self.device).eval()
        self.tile, self.overlap, self.batch_size = tile, overlap, batch_size
        self.label_spec: LabelSpec = ckpt.label_spec
        self.name = f"{ckpt.model_name} ({Path(ckpt.path).stem})" if ckpt.path else ckpt.model_name
        norm = ckpt.normalization or {}
        self.norm = {"in_channels": int(norm.get("in_channels", 1)), "mean": float(norm.get("mean", 0.5)),
                     "std": float(norm.get("std", 0.25))}

    def _input(self, image: np.ndarray) -> torch.Tensor:
        return to_model_input(image, **self.norm)

    def probs(self, image: np.ndarray) -> np.ndarray:
        return predict(self.ckpt, image, tile=self.tile, overlap=self.overlap, device=self.device,
                       batch_size=self.batch_size).probs

    @torch.no_grad()
    def probs_batch(self, images: list[np.ndarray]) -> np.ndarray:
        x = torch.cat([self._input(im) for im in images]).to(self.device)
        with autocast(self.device):
            return class_probs(self.net(x).float()).cpu().numpy()

    @torch.no_grad()
    def mc_dropout(self, image: np.ndarray, samples: int = 20, seed: int = 0) -> np.ndarray:
        """H x W mutual information (epistemic uncertainty) of ``samples`` dropout passes, each one
        tiled like :meth:`probs`, so it runs on images of any size."""
        from segmodels.uncertainty.mc_dropout import dropout_layers, mc_dropout_mode
        if samples < 2:
            raise MarsamError(f"MC dropout needs at least 2 samples, got {samples}")
        if not dropout_layers(self.net):
            raise MarsamError(f"{self.name} has no dropout layers, so MC dropout has nothing to sample; "
                              "use a model trained with dropout > 0 (e.g. the attention_unet teacher) or "
                              "--uncertainty entropy")
        x = self._input(image)
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        mean = exp_ent = None
        try:
            with mc_dropout_mode(self.net):
                for _ in range(samples):
                    p = torch.from_numpy(tiled_probs(self.net, x, self.tile, self.overlap, self.device,
                                                     self.batch_size))
                    ent = -(p * torch.log(p.clamp_min(EPS))).sum(0)
                    mean = p if mean is None else mean + p
                    exp_ent = ent if exp_ent is None else exp_ent + ent
        finally:
            torch.random.set_rng_state(state)
        mean, exp_ent = mean / samples, exp_ent / samples
        pred_ent = -(mean * torch.log(mean.clamp_min(EPS))).sum(0)
        return (pred_ent - exp_ent).clamp_min(0.0).numpy().astype(np.float32)


class OnnxPredictor:
    """An exported ``.onnx`` network through onnxruntime, tiled exactly like the PyTorch one."""

    kind = "onnx"

    def __init__(self, path: str | Path, tile: int = 512, overlap: int = 64, batch_size: int = 4,
                 threads: int | None = None):
        from segmodels.onnx_models import OnnxModel
        self.model = OnnxModel(path, threads=threads)
        self.tile, self.overlap, self.batch_size = tile, overlap, batch_size
        self.label_spec = self.model.label_spec
        self.name = self.model.name
        n = self.model.normalization
        self.norm = {"in_channels": int(n.get("in_channels", 1)), "mean": float(n.get("mean", 0.5)),
                     "std": float(n.get("std", 0.25))}

    def probs(self, image: np.ndarray) -> np.ndarray:
        x = to_model_input(image, **self.norm)
        h, w = x.shape[-2:]
        if h <= self.tile and w <= self.tile:
            return class_probs(self.model(x))[0].numpy()
        return tiled_probs(self.model, x, self.tile, self.overlap, torch.device("cpu"), self.batch_size)

    def probs_batch(self, images: list[np.ndarray]) -> np.ndarray:
        x = torch.cat([to_model_input(im, **self.norm) for im in images])
        return class_probs(self.model(x)).numpy()


class DecoderPredictor:
    """A SAM domain decoder: SAM embeds the image (annotate's disk cache), the decoder segments it."""

    kind = "sam_decoder"

    def __init__(self, ckpt: Checkpoint, sam_model, cache=None):
        from annotate.embeddings import EmbeddingCache
        self.ckpt, self.sam = ckpt, sam_model
        self.cache = cache if cache is not None else EmbeddingCache()
        self.label_spec = ckpt.label_spec
        self.name = f"sam_decoder ({Path(ckpt.path).stem})" if ckpt.path else "sam_decoder"

    def probs(self, image: np.ndarray) -> np.ndarray:
        from distill.decoder import decoder_image_probs
        return decoder_image_probs(self.ckpt.model, self.sam, image, self.cache)


def open_predictor(checkpoint: str | Path | None = None, pretrained: str | None = None, device=None,
                   tile: int = 512, overlap: int = 64, batch_size: int = 4, sam_model_type: str = "vit_b",
                   sam_checkpoint: str | None = None, sam_model=None, threads: int | None = None):
    """The predictor for ``--checkpoint`` (a marsam .safetensors or an .onnx file) or ``--pretrained``;
    ``batch_size`` is the number of tiles per forward pass inside a large image."""
    if (checkpoint is None) == (pretrained is None):
        raise MarsamError("give exactly one model: --checkpoint FILE (.safetensors or .onnx) or --pretrained NAME")
    if pretrained is not None:
        from distill.pretrained import load_pretrained
        return UNetPredictor(load_pretrained(pretrained), device, tile, overlap, batch_size)
    path = Path(checkpoint)
    if path.suffix.lower() == ".onnx":
        return OnnxPredictor(path, tile, overlap, batch_size, threads)
    ckpt = load_checkpoint(path)
    if ckpt.model_name == "sam_decoder":
        if sam_model is None:
            from annotate.sam_loading import load_sam
            sam_model = load_sam(sam_model_type, sam_checkpoint, device)
        return DecoderPredictor(ckpt, sam_model)
    return UNetPredictor(ckpt, device, tile, overlap, batch_size)
