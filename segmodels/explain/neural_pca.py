"""Class-wise neural PCA of penultimate features (the martian_terrain_segmentation notebook).

Every marsam network computes class logits as ``head(phi(x))`` with ``phi = model.features``
and a 1x1 convolution ``head``. For class c the logit at a pixel is ``sum_f w_cf phi_f + b_c``,
so the vector ``e = w_c * phi`` (element-wise, F entries) is the logit split into per-feature
contributions. Pooling ``e`` over the pixels the model predicts as c (the default; ``pool="all"``
pools over every pixel) gives one embedding per image; PCA over a dataset of images finds the
few directions in which the model's evidence for c varies. Because the logit is the SUM of
``e``, the logit of image i decomposes exactly as ``1.e_mean + sum_j t_ij (1.v_j)`` with
``t_ij`` its score on component j: that is each component's contribution to the class logit.
Components are sign-fixed so that ``1.v_j >= 0`` (a high score means more evidence for c).
Images where c is predicted nowhere are left out (listed in ``absent``) under ``pool="predicted"``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..checkpoints import Checkpoint
from ..errors import MarsamError
from ..labels import LabelSpec
from ..normalization import Normalization
from .inputs import class_index, class_label, resolve

POOLS = ("predicted", "all")


@dataclass
class ClassPCA:
    class_id: int
    class_name: str
    image_ids: list[str]           # images that entered the PCA, in row order
    absent: list[str]              # images without predicted pixels of the class
    components: np.ndarray         # n x F unit vectors
    eigenvalues: np.ndarray        # n, variance along each component
    explained_ratio: np.ndarray    # n, share of the total variance
    logit_weight: np.ndarray       # n, 1 . v_j: change of the class logit per unit score
    scores: np.ndarray             # N x n projection of each image
    mean_abs_contribution: np.ndarray  # n, mean |t_ij (1 . v_j)| over images
    top_images: list[list[str]]    # per component, image ids with the highest scores
    embedding_mean: np.ndarray     # F, mean of the embeddings

    def to_dict(self) -> dict:
        return {"class_id": self.class_id, "class": self.class_name, "images": len(self.image_ids),
                "absent": self.absent, "eigenvalues": self.eigenvalues.tolist(),
                "explained_ratio": self.explained_ratio.tolist(), "logit_weight": self.logit_weight.tolist(),
                "mean_abs_contribution": self.mean_abs_contribution.tolist(),
                "mean_logit_from_features": float(self.embedding_mean.sum()),
                "top_images": self.top_images, "components": self.components.tolist()}


@dataclass
class NeuralPCAResult:
    classes: list[ClassPCA]
    pool: str
    feature_channels: int
    skipped: list[dict] = field(default_factory=list)  # unreadable images: {"image", "error"}

    def to_dict(self) -> dict:
        return {"pool": self.pool, "feature_channels": self.feature_channels, "skipped": self.skipped,
                "classes": [c.to_dict() for c in self.classes]}


@torch.no_grad()
def class_embeddings(model: nn.Module, x: torch.Tensor, pool: str = "predicted") -> tuple[np.ndarray, np.ndarray]:
    """(K x F pooled ``w_c * phi`` for every class, K bool: whether class c was predicted)."""
    phi = model.features(x)                       # 1 x F x H x W
    logits = model.head(phi)
    w = model.head.weight[:, :, 0, 0]             # K x F
    k = w.shape[0]
    labels = logits.argmax(dim=1)[0] if k > 1 else (logits[0, 0] > 0).long()
    flat = phi[0].flatten(1)                      # F x P
    out = torch.zeros_like(w)
    present = torch.zeros(k, dtype=torch.bool)
    for c in range(k):
        lab = 1 if k == 1 else c  # a single sigmoid logit: its evidence is for the foreground
        sel = (labels.flatten() == lab) if pool == "predicted" else torch.ones_like(labels.flatten(), dtype=torch.bool)
        present[c] = bool(sel.any())
        if present[c]:
            out[c] = w[c] * flat[:, sel].mean(dim=1)
    return out.float().cpu().numpy(), present.numpy()


def _pca(ids: list[str], emb: np.ndarray, n_components: int, top_k: int):
    mean = emb.mean(axis=0)
    centered = emb - mean
    n = min(n_components, centered.shape[0] - 1, centered.shape[1])  # N images span N - 1 directions
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    comps = vt[:n]
    sign = np.where(comps.sum(axis=1) < 0, -1.0, 1.0)
    comps = comps * sign[:, None]
    eig = (s[:n] ** 2) / max(len(ids) - 1, 1)
    total = (s ** 2).sum() / max(len(ids) - 1, 1)
    ratio = eig / total if total > 0 else np.zeros_like(eig)
    scores = centered @ comps.T
    lw = comps.sum(axis=1)
    contrib = np.abs(scores * lw[None]).mean(axis=0)
    top = [[ids[i] for i in np.argsort(-scores[:, j])[:top_k]] for j in range(n)]
    return mean, comps, eig, ratio, lw, scores, contrib, top


def neural_pca(model: nn.Module | Checkpoint, images: Iterable[tuple[str, np.ndarray | torch.Tensor]],
               classes: Iterable[str | int] | None = None, n_components: int = 5, top_k: int = 6,
               pool: str = "predicted", normalization: Normalization | dict | None = None,
               label_spec: LabelSpec | None = None, device: torch.device | str | None = None,
               progress=None) -> NeuralPCAResult:
    """Neural PCA for each of ``classes`` (default: all) over ``images`` = (id, image) pairs.

    An image that cannot be read or normalised is recorded in ``skipped`` and the rest go on.
    ``progress`` is an optional wrapper over the iterable (e.g. ``tqdm``).
    """
    if pool not in POOLS:
        raise MarsamError(f"unknown pooling {pool!r}; use one of {', '.join(POOLS)}")
    if n_components < 1:
        raise MarsamError(f"n_components must be at least 1, got {n_components}")
    ids: list[str] = []
    embs: list[np.ndarray] = []
    pres: list[np.ndarray] = []
    skipped: list[dict] = []
    spec = None
    net = model
    it = progress(images) if progress else images
    for image_id, img in it:
        try:
            r = resolve(net, img, normalization, label_spec, device)
        except MarsamError as e:
            skipped.append({"image": str(image_id), "error": str(e)})
            continue
        if spec is None:
            spec, net, normalization = r.label_spec, r.model, r.normalization
        e, p = class_embeddings(r.model, r.x, pool)
        ids.append(str(image_id))
        embs.append(e)
        pres.append(p)
    if spec is None:
        raise MarsamError("no image could be used for neural PCA"
                          + (f" ({skipped[0]['image']}: {skipped[0]['error']})" if skipped else "; the dataset is empty"))
    emb = np.stack(embs)    # N x K x F
    present = np.stack(pres)
    class_ids = [class_index(spec, net, c) for c in classes] if classes else list(range(emb.shape[1]))
    out = []
    for c in class_ids:
        rows = np.flatnonzero(present[:, c])
        absent = [ids[i] for i in np.flatnonzero(~present[:, c])]
        if len(rows) < 2:
            out.append(ClassPCA(c, class_label(spec, c), [ids[i] for i in rows], absent,
                                np.zeros((0, emb.shape[2]), np.float32), np.zeros(0), np.zeros(0), np.zeros(0),
                                np.zeros((len(rows), 0)), np.zeros(0), [], emb[rows, c].mean(axis=0) if len(rows)
                                else np.zeros(emb.shape[2], np.float32)))
            continue
        cids = [ids[i] for i in rows]
        mean, comps, eig, ratio, lw, scores, contrib, top = _pca(cids, emb[rows, c].astype(np.float64),
                                                                 n_components, top_k)
        out.append(ClassPCA(c, class_label(spec, c), cids, absent, comps.astype(np.float32), eig, ratio, lw,
                            scores, contrib, top, mean))
    return NeuralPCAResult(classes=out, pool=pool, feature_channels=int(emb.shape[2]), skipped=skipped)
