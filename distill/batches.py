"""Training batches that live on the training device and are augmented there, a batch at a time.

A 4200-image split at 256 px is 0.28 GB of 8-bit pixels: it fits on any GPU, so the images, the
label maps (and the optional soft labels of a decoder teacher) are copied to the device once and
every batch is gathered, augmented and normalised there. No worker processes, no per-image
Python, no host-to-device copies in the epoch loop: on a GPU that is what keeps the network, not
the data pipeline, the bottleneck. The same code runs on the CPU, where the vectorised
augmentation is also cheaper than per-image OpenCV calls.

:class:`BatchAugment` draws one set of parameters per image from a generator seeded by
``(seed, epoch)``, so an epoch's augmentations are reproducible. Geometry (flips, rotation, a
random zoom-in crop or zoom-out, shift) is one affine warp per image through
``torch.nn.functional.affine_grid``/``grid_sample``: bilinear with reflection for the image and the
soft labels, nearest for the label map, whose pixels warped in from outside the image become the
ignore value. ``batch["valid"]`` marks the pixels that came from inside the image (what a
distillation loss on unlabelled pixels may use). Photometric changes touch the image only:
brightness, contrast, gamma, Gaussian blur and noise, all in the [0, 1] range before
normalisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from segmodels.errors import MarsamError
from segmodels.labels import IGNORE_INDEX


@dataclass(frozen=True)
class BatchAugment:
    hflip: float = 0.5
    vflip: float = 0.0
    affine_p: float = 0.5          #: probability of the geometric warp
    rotate: float = 10.0           #: max degrees either way
    zoom_in: float = 0.1           #: zoom factor drawn in [1 - zoom_out, 1 + zoom_in] (>1 crops in)
    zoom_out: float = 0.1
    translate: float = 0.05        #: max shift, fraction of the side
    brightness: float = 0.15       #: additive
    contrast: float = 0.15         #: multiplicative around each image's mean
    gamma: float = 0.0             #: log-uniform gamma in [1/(1+g), 1+g]; 0 off
    blur_p: float = 0.0            #: probability of a Gaussian blur
    blur_sigma: float = 1.2        #: max sigma of that blur, pixels
    noise: float = 0.02            #: std of Gaussian noise
    ignore_index: int = IGNORE_INDEX


#: named policies: ``basic`` is the first release's augmentation (flips, a small affine,
#: brightness/contrast/noise); ``strong`` adds random zoom-in crops up to 1.6x, gamma and blur.
AUGMENT_POLICIES: dict[str, BatchAugment | None] = {
    "none": None,
    "flip": BatchAugment(affine_p=0.0, brightness=0.0, contrast=0.0, noise=0.0),
    "basic": BatchAugment(),
    "strong": BatchAugment(affine_p=0.8, rotate=15.0, zoom_in=0.6, zoom_out=0.15, translate=0.1,
                           brightness=0.2, contrast=0.25, gamma=0.4, blur_p=0.2, noise=0.02),
}


def augment_policy(name: str, vflip: bool = False) -> BatchAugment | None:
    if name not in AUGMENT_POLICIES:
        raise MarsamError(f"unknown augmentation policy {name!r}; choose one of {', '.join(AUGMENT_POLICIES)}")
    pol = AUGMENT_POLICIES[name]
    if pol is not None and vflip:
        pol = replace(pol, vflip=0.5)
    return pol


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur; ``sigma`` has one value per image (0: unchanged)."""
    n, c, h, w = x.shape
    r = 3
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(1, keepdim=True)                          # n x 7
    k = torch.where((sigma > 0)[:, None], k, (t == 0).to(x.dtype)[None].expand(n, -1))
    y = x.reshape(1, n * c, h, w)
    kc = k.repeat_interleave(c, 0)                          # (n*c) x 7
    y = F.pad(y, (r, r, 0, 0), mode="reflect")
    y = F.conv2d(y, kc[:, None, None, :], groups=n * c)
    y = F.pad(y, (0, 0, r, r), mode="reflect")
    y = F.conv2d(y, kc[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def apply_augment(aug: BatchAugment, img: torch.Tensor, mask: torch.Tensor, gen: torch.Generator,
                  soft: torch.Tensor | None = None):
    """``img`` float N x C x H x W in [0, 1], ``mask`` long N x H x W, ``soft`` N x K x H x W.

    Returns ``(img, mask, soft, valid)``; ``valid`` (bool N x H x W) is False where the warp
    brought in pixels from outside the image.
    """
    n, _, h, w = img.shape
    dev = img.device

    def u(lo, hi, size=(n,)):
        return torch.rand(size, generator=gen, device=dev) * (hi - lo) + lo

    valid = torch.ones(n, h, w, dtype=torch.bool, device=dev)
    # geometry: flips and one affine per image, as a sampling grid in [-1, 1] coordinates
    sx = torch.where(u(0, 1) < aug.hflip, -1.0, 1.0)
    sy = torch.where(u(0, 1) < aug.vflip, -1.0, 1.0)
    warp = u(0, 1) < aug.affine_p
    ang = torch.where(warp, u(-aug.rotate, aug.rotate), torch.zeros(n, device=dev)) * math.pi / 180
    zoom = torch.where(warp, u(1 - aug.zoom_out, 1 + aug.zoom_in), torch.ones(n, device=dev))
    tx = torch.where(warp, u(-aug.translate, aug.translate) * 2, torch.zeros(n, device=dev))
    ty = torch.where(warp, u(-aug.translate, aug.translate) * 2, torch.zeros(n, device=dev))
    if bool(warp.any()) or bool((sx < 0).any()) or bool((sy < 0).any()):
        cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
        theta = torch.stack([torch.stack([cos * sx, -sin * sy, tx], 1),
                             torch.stack([sin * sx, cos * sy, ty], 1)], 1)      # n x 2 x 3
        grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
        img = F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        inside = F.grid_sample(torch.ones(n, 1, h, w, device=dev), grid, mode="nearest",
                               padding_mode="zeros", align_corners=False)[:, 0] > 0.5
        m = F.grid_sample(mask[:, None].float(), grid, mode="nearest", padding_mode="border",
                          align_corners=False)[:, 0].long()
        mask = torch.where(inside, m, torch.full_like(m, aug.ignore_index))
        valid = inside
        if soft is not None:
            soft = F.grid_sample(soft.float(), grid, mode="bilinear", padding_mode="reflection",
                                 align_corners=False)
    # photometric, on the image only
    dims = tuple(range(1, img.ndim))
    if aug.contrast:
        c = u(1 - aug.contrast, 1 + aug.contrast).view(n, 1, 1, 1)
        mean = img.mean(dim=dims, keepdim=True)
        img = (img - mean) * c + mean
    if aug.brightness:
        img = img + u(-aug.brightness, aug.brightness).view(n, 1, 1, 1)
    if aug.gamma:
        g = torch.exp(u(-math.log1p(aug.gamma), math.log1p(aug.gamma))).view(n, 1, 1, 1)
        img = img.clamp(0, 1) ** g
    if aug.blur_p:
        sig = torch.where(u(0, 1) < aug.blur_p, u(0.3, aug.blur_sigma), torch.zeros(n, device=dev))
        if bool((sig > 0).any()):
            img = _gaussian_blur(img, sig)
    if aug.noise:
        img = img + torch.randn(img.shape, generator=gen, device=dev) * aug.noise
    return img.clamp(0, 1), mask, soft, valid


def dataset_tensors(dataset, device: torch.device) -> dict:
    """Images (uint8 N x C x H x W), label maps (uint8 N x H x W) and soft labels on ``device``.

    Built once per dataset and device and kept on the dataset (``_device_tensors``).
    """
    cache = getattr(dataset, "_device_tensors", None)
    if cache is not None and cache["device"] == str(device):
        return cache
    if dataset.size is None:
        raise MarsamError("device batches need images of one size; give the dataset a size")
    imgs = []
    for a in dataset.images:
        a = np.asarray(a)
        if dataset.channels == 1 and a.ndim == 3:
            a = np.round(a.astype(np.float32).mean(axis=2)).astype(np.uint8)
        if a.ndim == 2:
            a = a[None] if dataset.channels == 1 else np.repeat(a[None], 3, axis=0)
        else:
            a = a.transpose(2, 0, 1)
        imgs.append(a)
    cache = {"device": str(device),
             "x": torch.from_numpy(np.stack(imgs)).to(device),
             "y": torch.from_numpy(np.stack(dataset.masks)).to(device)}
    if getattr(dataset, "soft", None) is not None:
        cache["soft"] = torch.from_numpy(np.stack(dataset.soft).astype(np.float16)).to(device)
    dataset._device_tensors = cache
    return cache


class DeviceBatches:
    """An iterable of training batches gathered from :func:`dataset_tensors` on ``device``.

    ``order`` yields the image indices of an epoch (a DistributedSampler under DDP, so each rank
    sees its shard); ``augment`` None means no augmentation (validation).
    """

    def __init__(self, dataset, device: torch.device, batch_size: int, order=None,
                 augment: BatchAugment | None = None, channels_last: bool = False, seed: int = 0,
                 drop_last: bool = False):
        self.dataset, self.device, self.batch_size = dataset, device, int(batch_size)
        self.order, self.augment, self.channels_last = order, augment, channels_last
        self.seed, self.drop_last, self.epoch = int(seed), drop_last, 0
        self.mean, self.std = float(dataset.mean), float(dataset.std)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _indices(self) -> list[int]:
        return list(self.order) if self.order is not None else list(range(len(self.dataset)))

    def __len__(self) -> int:
        n = len(self.order) if self.order is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        t = dataset_tensors(self.dataset, self.device)
        idx = torch.tensor(self._indices(), dtype=torch.long)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        for s in range(0, len(idx), self.batch_size):
            b = idx[s:s + self.batch_size]
            if self.drop_last and len(b) < self.batch_size:
                break
            bd = b.to(self.device)
            img = t["x"].index_select(0, bd).float() / 255.0
            y = t["y"].index_select(0, bd).long()
            soft = t["soft"].index_select(0, bd).float() if "soft" in t else None
            valid = None
            if self.augment is not None:
                img, y, soft, valid = apply_augment(self.augment, img, y, gen, soft)
            x = (img - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            batch = {"x": x, "y": y, "index": b}
            if soft is not None:
                batch["soft"] = soft
            if valid is not None:
                batch["valid"] = valid
            yield batch
