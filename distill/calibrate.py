"""Calibrate a trained U-Net checkpoint: fit a temperature on a labelled split, fold it into the
head, and save a new checkpoint whose metadata records T and the ECE before and after. A fitted T
that would raise the ECE (T minimises the NLL, not the ECE) is recorded but not applied.

``marsam calibrate --checkpoint C --data D --split val --out C_calibrated.safetensors``
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from segmodels.checkpoints import load_checkpoint, save_checkpoint
from segmodels.device import autocast, pick_device
from segmodels.errors import MarsamError
from segmodels.uncertainty.temperature import fit_temperature, fold_temperature

from .batches import DeviceBatches
from .data import SegmentationDataset
from .metrics import SegmentationMetrics


@torch.no_grad()
def dataset_logits(model: torch.nn.Module, dataset: SegmentationDataset, device=None, batch_size: int = 16,
                   tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Float16 logits (N x K x H x W, on the CPU) and labels of a whole dataset.

    ``tta``: average the logits of the image and its horizontal mirror (test-time flips)."""
    dev = pick_device(device)
    model = model.to(dev).eval()
    outs, ys = [], []
    for b in DeviceBatches(dataset, dev, batch_size):
        with autocast(dev, True):
            z = model(b["x"]).float()
            if tta:
                z = 0.5 * (z + model(b["x"].flip(-1)).float().flip(-1))
        outs.append(z.half().cpu())
        ys.append(b["y"].to(torch.uint8).cpu())
    return torch.cat(outs), torch.cat(ys)


def logits_metrics(logits: torch.Tensor, labels: torch.Tensor, spec, temperature: float = 1.0) -> dict:
    m = SegmentationMetrics(spec.num_classes, spec.ignore_index)
    for s in range(0, len(logits), 64):
        m.update(logits[s:s + 64].float() / temperature, labels[s:s + 64].long())
    return m.compute(spec.classes)


def calibrate_checkpoint(checkpoint: str | os.PathLike, dataset: SegmentationDataset,
                         out: str | os.PathLike, device=None, batch_size: int = 16) -> dict:
    """Fit T on ``dataset``, fold it into a copy of the checkpoint at ``out``; returns the report."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt.label_spec.classes != dataset.label_spec.classes:
        raise MarsamError(f"{checkpoint} predicts {list(ckpt.label_spec.classes)} but the data is labelled "
                          f"{list(dataset.label_spec.classes)}; calibrate on data of the model's label spec")
    if (ckpt.training.get("calibration") or {}).get("temperature"):
        raise MarsamError(f"{checkpoint} is already calibrated (T={ckpt.training['calibration']['temperature']}); "
                          "calibrate the uncalibrated checkpoint instead")
    logits, labels = dataset_logits(ckpt.model, dataset, device, batch_size)
    t = fit_temperature(logits, labels, dataset.label_spec.ignore_index)
    before = logits_metrics(logits, labels, dataset.label_spec)
    after = logits_metrics(logits, labels, dataset.label_spec, t)
    # T minimises the NLL, which is not the ECE: when the fitted T would raise the ECE the model
    # is left as it is (T = 1) and the report says so
    applied = after["ece"] <= before["ece"]
    report = {"temperature": round(t, 4) if applied else 1.0, "fitted_temperature": round(t, 4),
              "applied": applied, "ece_before": before["ece"],
              "ece_after": after["ece"] if applied else before["ece"],
              "ece_with_fitted_temperature": after["ece"], "miou": after["miou"],
              "fitted_on": f"{dataset.source} ({dataset.split}, {len(dataset)} images)"}
    model = fold_temperature(ckpt.model.cpu(), t if applied else 1.0)
    training = dict(ckpt.training, calibration=report)
    save_checkpoint(Path(out), model, ckpt.label_spec, ckpt.normalization, training)
    return report
