"""The model of ``marsam predict``: a :class:`segmodels.predictors.Predictor`, plus what a batch run
adds on top of ``probabilities(image)``.

Every model kind comes from ``load_predictor`` (a checkpoint, a shipped model's name, an
``.onnx`` file, a SAM domain decoder). Two extras are used when a kind allows them:

- :func:`batch_probabilities`: several same-sized small images in one forward pass (a
  ``probabilities_batch`` method, as the ONNX kind has, or the predictor's torch ``module``);
- :func:`mc_dropout_mutual_info`: MC-dropout epistemic uncertainty, which needs the torch
  network; each stochastic pass is tiled like ``probabilities``, so it runs on any image size.
"""
from __future__ import annotations

import numpy as np
import torch

from segmodels.device import autocast, pick_device
from segmodels.errors import MarsamError
from segmodels.inference import class_probs, tiled_probs
from segmodels.predictors import Predictor, load_predictor
from segmodels.uncertainty.measures import EPS


def open_predictor(checkpoint=None, pretrained: str | None = None, device=None, sam_model_type: str = "vit_b",
                   sam_checkpoint: str | None = None, sam=None, cache=None, threads: int | None = None) -> Predictor:
    """The predictor of ``--checkpoint`` (.safetensors or .onnx) or ``--pretrained NAME``. A domain
    decoder gets SAM (``sam``, else loaded on first use from ``sam_model_type``/``sam_checkpoint``)
    and annotate's on-disk embedding cache (``cache``, else the user's), so a rerun or an image
    already labelled with SAM is not encoded again."""
    from annotate.embeddings import EmbeddingCache
    import segmodels.onnx_models  # noqa: F401  registers the .onnx kind (also an entry point)
    if (checkpoint is None) == (pretrained is None):
        raise MarsamError("give exactly one model: --checkpoint FILE (.safetensors or .onnx) or --pretrained NAME")

    def lazy_sam():
        from annotate.sam_loading import load_sam
        return load_sam(sam_model_type, sam_checkpoint, device)
    return load_predictor(pretrained if pretrained is not None else checkpoint, device=device,
                          sam=sam if sam is not None else lazy_sam, cache=cache if cache is not None else EmbeddingCache(),
                          threads=threads)


def describe(predictor: Predictor) -> str:
    """``unet (ai4mars-student)``: the network and the file it came from."""
    return f"{predictor.model_name} ({predictor.name})" if predictor.name != predictor.model_name else predictor.name


def can_batch(predictor: Predictor) -> bool:
    return hasattr(predictor, "probabilities_batch") or (
        predictor.module is not None and predictor.normalization.reads_pixels)


@torch.no_grad()
def batch_probabilities(predictor: Predictor, images: list[np.ndarray], device=None) -> np.ndarray:
    """N x K x H x W probabilities of same-sized images in one forward pass."""
    if hasattr(predictor, "probabilities_batch"):
        return predictor.probabilities_batch(images)
    net = predictor.module
    dev = pick_device(device) if device is not None else next(net.parameters()).device
    was = net.training
    net.to(dev).eval()
    try:
        x = torch.cat([predictor.normalization.to_model_input(im) for im in images]).to(dev)
        with autocast(dev):
            return np.ascontiguousarray(class_probs(net(x).float()).cpu().numpy(), np.float32)
    finally:
        net.train(was)


@torch.no_grad()
def mc_dropout_mutual_info(predictor: Predictor, image: np.ndarray, samples: int = 20, tile: int = 512,
                           overlap: int = 64, batch_size: int = 2, device=None, seed: int = 0) -> np.ndarray:
    """H x W mutual information between prediction and weights over ``samples`` dropout passes."""
    from segmodels.uncertainty.mc_dropout import dropout_layers, mc_dropout_mode
    net = predictor.module
    if net is None or not predictor.normalization.reads_pixels:
        raise MarsamError(f"{predictor.name} ({predictor.model_name}) cannot sample dropout: MC dropout needs a "
                          "PyTorch image network; use --uncertainty entropy")
    if samples < 2:
        raise MarsamError(f"MC dropout needs at least 2 samples, got {samples}")
    if not dropout_layers(net):
        raise MarsamError(f"{predictor.name} has no dropout layers, so MC dropout has nothing to sample; use a "
                          "model trained with dropout > 0 (e.g. the attention_unet teacher) or --uncertainty entropy")
    dev = pick_device(device) if device is not None else next(net.parameters()).device
    net.to(dev)
    x = predictor.normalization.to_model_input(image)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    mean = exp_ent = None
    try:
        with mc_dropout_mode(net):
            for _ in range(samples):
                p = torch.from_numpy(tiled_probs(net, x, tile, overlap, dev, batch_size))
                ent = -(p * torch.log(p.clamp_min(EPS))).sum(0)
                mean = p if mean is None else mean + p
                exp_ent = ent if exp_ent is None else exp_ent + ent
    finally:
        torch.random.set_rng_state(state)
    mean, exp_ent = mean / samples, exp_ent / samples
    pred_ent = -(mean * torch.log(mean.clamp_min(EPS))).sum(0)
    return (pred_ent - exp_ent).clamp_min(0.0).numpy().astype(np.float32)
