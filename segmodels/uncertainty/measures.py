"""Uncertainty read off one softmax: predictive entropy and one minus the max probability.

Both need a single forward pass, so they are what the napari plugin can show live. Entropy
uses natural logarithms, so it lies in [0, log K]; 1 - max p lies in [0, 1 - 1/K].
"""
from __future__ import annotations

import numpy as np
import torch

EPS = 1e-12


def _as_tensor(probs: np.ndarray | torch.Tensor) -> torch.Tensor:
    return probs if isinstance(probs, torch.Tensor) else torch.from_numpy(np.asarray(probs, np.float32))


def _by_rows(fn, probs: np.ndarray) -> np.ndarray:
    """``fn`` over a K x H x W numpy array in blocks of rows: temporaries of a block, not of the image."""
    out = np.empty(probs.shape[1:], np.float32)
    for r in range(0, probs.shape[1], 256):
        out[r:r + 256] = fn(probs[:, r:r + 256])
    return out


def predictive_entropy(probs: np.ndarray | torch.Tensor, dim: int = 0) -> np.ndarray | torch.Tensor:
    """-sum_k p_k log p_k over the class axis ``dim`` (K x H x W -> H x W by default)."""
    if not isinstance(probs, torch.Tensor) and dim == 0 and np.ndim(probs) == 3 and np.shape(probs)[1] > 256:
        return _by_rows(predictive_entropy, np.asarray(probs))
    t = _as_tensor(probs).float()
    ent = (-(t * torch.log(t.clamp_min(EPS))).sum(dim=dim)).clamp_min(0.0)
    return ent if isinstance(probs, torch.Tensor) else ent.numpy()


def max_prob_uncertainty(probs: np.ndarray | torch.Tensor, dim: int = 0) -> np.ndarray | torch.Tensor:
    """1 - max_k p_k over the class axis ``dim``."""
    if not isinstance(probs, torch.Tensor) and dim == 0 and np.ndim(probs) == 3 and np.shape(probs)[1] > 256:
        return _by_rows(max_prob_uncertainty, np.asarray(probs))
    t = _as_tensor(probs).float()
    out = (1.0 - t.max(dim=dim).values).clamp_min(0.0)
    return out if isinstance(probs, torch.Tensor) else out.numpy()


def single_pass_maps(probs: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (uint8 argmax), predictive entropy (nats) and confidence (max probability) of one
    K x H x W probability map, all three from the same probabilities in one pass: one max over
    the classes gives labels and confidence, ``xlogy`` gives the entropy without a clamped copy.
    A float32 numpy input is read in place, in blocks of 256 rows (temporaries of a block)."""
    t = _as_tensor(probs)
    if t.dtype != torch.float32:
        t = t.float()
    h, w = t.shape[1:]
    labels = torch.empty((h, w), dtype=torch.uint8)
    ent = torch.empty((h, w), dtype=torch.float32)
    conf = torch.empty((h, w), dtype=torch.float32)
    for r in range(0, h, 256):
        block = t[:, r:r + 256].cpu()
        c, lab = block.max(dim=0)
        conf[r:r + 256], labels[r:r + 256] = c, lab
        ent[r:r + 256] = torch.special.xlogy(block, block).sum(dim=0).neg_().clamp_min_(0.0)
    return labels.numpy(), ent.numpy(), conf.numpy()
