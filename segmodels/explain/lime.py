"""LIME over SLIC superpixels for a segmentation class score (captum ``Lime``).

The way the meteors package explains segmentation: the image is cut into SLIC superpixels
(scikit-image); random subsets of them are switched off (replaced by a baseline); the class
score (mean probability of the class over its FIXED predicted mask, :mod:`.reduction`) is
recorded for each perturbed image; a sparse linear surrogate (Lasso, captum's
``SkLearnLasso``) is fitted from "which superpixels were on" to the score, weighted by
similarity to the original. The surrogate's coefficients, painted back onto their superpixels,
are the map; its weighted R^2 on the samples says how far to trust them: a low R^2 means the
model's behaviour is not additive over these superpixels and the map should not be read.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from ..checkpoints import Checkpoint
from ..errors import MarsamError
from ..labels import LabelSpec
from ..normalization import Normalization
from .inputs import Explanation, class_index, class_label, finite_map, resolve
from .integrated_gradients import make_baseline
from .reduction import class_score


def _surrogate(alpha: float):
    """A Lasso surrogate that also records its weighted R^2 on the data it was fitted to."""
    from captum._utils.models.linear_model import SkLearnLasso

    class ScoredLasso(SkLearnLasso):
        r2: float = float("nan")

        def fit(self, train_data, **kwargs):
            out = super().fit(train_data, **kwargs)
            xs, ys, ws = [], [], []
            for batch in train_data:
                xs.append(batch[0].float())
                ys.append(batch[1].float().reshape(-1))
                ws.append(batch[2].float().reshape(-1) if len(batch) > 2 else torch.ones(len(batch[0])))
            x, y, w = torch.cat(xs), torch.cat(ys), torch.cat(ws)
            with torch.no_grad():
                pred = self(x).reshape(-1)
            ybar = (w * y).sum() / w.sum()
            ss_tot = float((w * (y - ybar) ** 2).sum())
            ss_res = float((w * (y - pred) ** 2).sum())
            self.r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
            return out

    return ScoredLasso(alpha=alpha)


#: below this weighted R^2 the surrogate explains (almost) none of the score's changes
log = logging.getLogger(__name__)
MIN_R2 = 0.1


def lime_warning(r2: float, nonzero: int, n_superpixels: int, max_abs: float, n_samples: int) -> str | None:
    """One line saying that a LIME map shows nothing and what to change, or None when it is usable.

    LIME fails silently when switching superpixels off hardly changes the class score (the
    model's prediction of the class does not depend on any one region, or the class is not
    predicted at all): the Lasso then keeps no coefficient, R^2 is ~0 and the map is all zero.
    """
    if nonzero == 0 or max_abs == 0.0:
        what = f"all {n_superpixels} superpixel coefficients are zero (R^2 {r2:.2f})"
    elif not (r2 >= MIN_R2):          # also NaN: a constant score
        what = f"the surrogate explains almost nothing (R^2 {r2:.2f}, {nonzero} of {n_superpixels} coefficients non-zero)"
    else:
        return None
    return (f"LIME: {what}, so the map shows nothing reliable; switching superpixels off barely changes the "
            f"score: try more samples (--samples {max(4 * n_samples, 1000)}), fewer superpixels (--segments "
            f"{max(n_superpixels // 2, 8)}), another --baseline, or a class the model predicts in this image (--class)")


def superpixels(x: torch.Tensor, normalization: Normalization | dict | None, n_segments: int = 50,
                compactness: float = 0.1) -> np.ndarray:
    """H x W int64 SLIC segment ids 0..S-1 of the (de-normalised) image."""
    from skimage.segmentation import slic

    img = Normalization.coerce(normalization).to_unit(x[0].detach().cpu().float().numpy()).clip(0.0, 1.0)
    img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
    seg = slic(img, n_segments=int(n_segments), compactness=compactness, start_label=0,
               channel_axis=None if img.ndim == 2 else -1)
    _, seg = np.unique(seg, return_inverse=True)  # contiguous ids, as captum's mask expects
    return seg.reshape(img.shape[:2]).astype(np.int64)


def lime(model: nn.Module | Checkpoint, x: torch.Tensor | np.ndarray, target: str | int,
         n_samples: int = 200, n_segments: int = 50, compactness: float = 0.1,
         baseline: str | float = "mean", alpha: float = 0.001, perturbations_per_eval: int = 8,
         normalization: Normalization | dict | None = None, label_spec: LabelSpec | None = None,
         device: torch.device | str | None = None, seed: int = 0, show_progress: bool = False) -> Explanation:
    """LIME map (H x W: each superpixel's surrogate coefficient) of class ``target``.

    ``extras``: ``r2`` (weighted R^2 of the surrogate on its samples), ``n_superpixels``,
    ``nonzero_coefficients`` (the surrogate's sparsity), ``segments`` (the H x W SLIC map), and
    ``warning`` (one line, see :func:`lime_warning`) when the surrogate explains nothing.
    ``show_progress``: captum's progress bar over the samples (the CLI shows it).
    """
    from captum.attr import Lime

    if n_samples < 4:
        raise MarsamError(f"LIME needs at least 4 samples to fit its surrogate, got {n_samples}")
    r = resolve(model, x, normalization, label_spec, device)
    c = class_index(r.label_spec, r.model, target)
    score, info = class_score(r.model, r.x, c, score="prob", aggregate="mean")
    seg = superpixels(r.x, r.normalization, n_segments, compactness)
    mask = torch.from_numpy(seg)[None, None].to(r.x.device)
    base = make_baseline(r.x, baseline, r.normalization)
    surrogate = _surrogate(alpha)
    explainer = Lime(score, interpretable_model=surrogate)
    gen = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            attr = explainer.attribute(r.x, baselines=base, target=None, feature_mask=mask,
                                       n_samples=int(n_samples), perturbations_per_eval=int(perturbations_per_eval),
                                       return_input_shape=True, show_progress=show_progress)
    finally:
        torch.random.set_rng_state(gen)
    coefs = surrogate.representation().reshape(-1)
    extras = dict(info, r2=float(surrogate.r2), n_samples=int(n_samples), n_superpixels=int(seg.max() + 1),
                  nonzero_coefficients=int((coefs.abs() > 0).sum()), alpha=alpha,
                  baseline=baseline, segments=seg)
    amap = finite_map(attr[0, 0] if attr.shape[1] else attr)
    why = lime_warning(extras["r2"], extras["nonzero_coefficients"], extras["n_superpixels"],
                       float(np.abs(amap).max()) if amap.size else 0.0, int(n_samples))
    if why:
        extras["warning"] = why
        log.info(why)
    return Explanation(map=amap, method="lime", class_id=c,
                       class_name=class_label(r.label_spec, c), extras=extras)
