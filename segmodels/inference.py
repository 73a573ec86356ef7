"""Predict a label map for an image of any size: the one inference path of marsam.

Every image-reading :class:`~segmodels.predictors.Predictor` (the U-Nets) ends in
:func:`network_probabilities`; ``segmodels.predictors.predict`` is the short form for one image. Images are
processed at their NATIVE resolution: the pixel scale of a user's image is unknown (a 1024 px
navcam frame, a HiRISE crop), and resizing it to the training size would blur away the small
rocks experts care most about; the U-Nets are fully convolutional, so they run at any size.
Images larger than ``tile`` are cut into overlapping tiles, batched, and blended with a smooth
(Hann) window so tile seams do not show; memory is bounded by ``batch_size`` tiles of ``tile``
pixels however large the image is, and the accumulators are two float32 arrays
(K x H x W and H x W).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .device import autocast, pick_device
from .errors import MarsamError


def class_probs(logits: torch.Tensor) -> torch.Tensor:
    """N x K x H x W probabilities from a network's logits; a single-logit (binary sigmoid) head
    becomes two channels [1 - p, p], so every consumer sees K >= 2 classes."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def _window(h: int, w: int) -> np.ndarray:
    """Separable Hann window, strictly positive so every pixel has weight."""
    def hann(n):
        return 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)
    return np.outer(hann(h), hann(w)).astype(np.float32) + 1e-3


@torch.no_grad()
def network_probabilities(net: nn.Module, x: torch.Tensor, tile: int = 512, overlap: int = 64,
                          batch_size: int = 4, device: str | torch.device | None = None) -> np.ndarray:
    """K x H x W float32 probabilities of ``net`` on the normalised 1 x C x H x W input ``x``,
    in overlapping tiles blended with a Hann window when ``x`` is larger than ``tile``."""
    if tile < 16:
        raise MarsamError(f"tile must be at least 16 pixels, got {tile}")
    if not 0 <= overlap < tile // 2:
        raise MarsamError(f"overlap must be in 0..{tile // 2 - 1} for tile {tile}, got {overlap}")
    if batch_size < 1:
        raise MarsamError(f"batch size must be at least 1, got {batch_size}")
    dev = pick_device(device) if device is not None else next(net.parameters()).device
    was = net.training
    net.to(dev).eval()
    try:
        fast = inference_network(net)
        h, w = x.shape[-2:]
        if h <= tile and w <= tile:
            with autocast(dev):
                probs = class_probs(fast(_cl(x.to(dev))).float())[0].cpu().numpy()
        else:
            probs = tiled_probs(fast, x, tile, overlap, dev, batch_size)
    finally:
        net.train(was)
    return np.ascontiguousarray(probs, dtype=np.float32)


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def inference_network(net: nn.Module) -> nn.Module:
    """A copy of the eval-mode ``net`` made for inference: every BatchNorm that follows a
    convolution inside an ``nn.Sequential`` (where module order is execution order) folded into
    that convolution, and channels-last memory. Same outputs to float rounding; on a 2-core CPU
    the student runs about twice as fast on a 1024 px image (benchmarks/bench_napari_loop.py).
    The copy keeps ``net``'s forward hooks (progress and cancel of the napari jobs count forward
    passes); Grad-CAM and other methods that hook inner layers use ``net`` itself, never this."""
    import copy
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    if net.training:
        return net
    fast = copy.deepcopy(net)

    def fold(module: nn.Module) -> None:
        for child in module.children():
            fold(child)
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                        and not conv._forward_hooks and not bn._forward_hooks and not bn._forward_pre_hooks):
                    module._modules[a] = fuse_conv_bn_eval(conv, bn)
                    module._modules[b] = nn.Identity()
    fold(fast)
    return fast.to(memory_format=torch.channels_last)


def tiled_probs(net, x: torch.Tensor, tile: int, overlap: int, dev: torch.device,
                batch_size: int) -> np.ndarray:
    """K x H x W probabilities of the normalised 1 x C x H x W input ``x`` from overlapping,
    Hann-blended tiles; ``net`` is any callable from N x C x h x w tensors to logits (a marsam
    network, an :class:`segmodels.onnx_models.OnnxModel`)."""
    h, w = x.shape[-2:]
    th, tw = min(tile, h), min(tile, w)
    stride = tile - overlap
    boxes = [(y, xx) for y in _starts(h, th, stride) for xx in _starts(w, tw, stride)]
    win = _window(th, tw)
    acc = None
    weight = np.zeros((h, w), np.float32)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        batch = torch.cat([x[..., y:y + th, xx:xx + tw] for y, xx in chunk]).to(dev)
        with autocast(dev):
            p = class_probs(net(_cl(batch) if isinstance(net, nn.Module) else batch).float()).cpu().numpy()
        if acc is None:
            acc = np.zeros((p.shape[1], h, w), np.float32)
        for (y, xx), pt in zip(chunk, p):
            acc[:, y:y + th, xx:xx + tw] += pt * win
            weight[y:y + th, xx:xx + tw] += win
    acc /= weight   # in place: a second K x H x W array would double the peak
    return acc
