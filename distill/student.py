"""Knowledge distillation into the small U-Net student.

loss = alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher || student) [+ cwd * CWD], with
ignored pixels masked out of every term. The teacher is an Attention U-Net run under
``no_grad`` once per batch on the same augmented batch the student sees, the SAM domain decoder
(whose logits are computed once per image before training and carried through the same
geometric augmentation, because SAM's encoder is far too slow to run per batch), or the average
of the two. ``distill=False`` trains the identical student on labels alone: the baseline.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec
from segmodels.normalization import Normalization
from segmodels.predictors import Predictor, check_label_spec, load_predictor

from .config import TrainConfig
from .data import SegmentationDataset
from .losses import distillation_loss
from .tasks import SupervisedTask
from .teacher import prepare_run
from .train_loop import ProgressFn, StopFn, TrainResult, fit


def resolve_model(obj, what: str, label_spec: LabelSpec) -> tuple[Predictor, str]:
    """The Predictor of a checkpoint path, a Checkpoint or a module; label spec checked."""
    if obj is None:
        raise MarsamError(f"distillation needs a {what}: give its checkpoint (--teacher PATH or "
                          f"{what}_checkpoint in the config), or set distill=false for a label-only student")
    p = load_predictor(obj)
    check_label_spec(p, label_spec, what=f"the {what} {p.name}", where="the student's labels are",
                     fix=f"use a {what} trained with the same label spec")
    return p, str(p.checkpoint.path) if p.checkpoint is not None else type(p.module).__name__


def _check_teacher(pred: Predictor, train: SegmentationDataset) -> None:
    """A teacher of another input size or channel count fails here, before any training."""
    ck = pred.checkpoint
    if ck is None:
        return
    tc = pred.normalization.in_channels
    if tc != train.channels:
        raise MarsamError(f"the teacher takes {tc}-channel input but the student data is {train.channels}-channel; "
                          f"set channels={tc} or use a teacher trained on {train.channels}-channel images")
    cfg = ck.training.get("config") if isinstance(ck.training, dict) else None
    tsize = (cfg or {}).get("size") if isinstance(cfg, dict) else None
    if tsize and train.size and int(tsize) != int(train.size):
        raise MarsamError(f"the teacher was trained at {tsize} px but the student trains at {train.size} px; "
                          f"set size={tsize} or train a teacher at {train.size} px")


@torch.no_grad()
def attach_teacher_soft_labels(dataset: SegmentationDataset, teacher: nn.Module,
                               teacher_norm: Normalization | None, device=None, batch_size: int = 32,
                               progress: bool = False) -> None:
    """Run the teacher once on every (unaugmented) training image and attach its logits as
    ``dataset.soft`` (float16); the augmentation then warps them with the image, as for the
    decoder teacher. The teacher sees the clean image, the student the augmented one."""
    from segmodels.device import autocast, pick_device
    dev = pick_device(device)
    teacher = teacher.to(dev).eval()
    norm = teacher_norm or dataset.normalization
    soft = []
    idx = range(0, len(dataset), batch_size)
    if progress:
        from tqdm import tqdm
        idx = tqdm(idx, desc="teacher soft labels", unit="batch", leave=False)
    for s in idx:
        xs = []
        for i in range(s, min(s + batch_size, len(dataset))):
            img = dataset.image_float(i)
            xs.append(img[None] if img.ndim == 2 else img.transpose(2, 0, 1))
        x = (torch.from_numpy(np.stack(xs)).to(dev) - float(norm.mean)) / float(norm.std)
        with autocast(dev, True):
            logits = teacher(x).float()
        soft += list(logits.half().cpu().numpy())
    dataset.soft = soft


class DistillTask(SupervisedTask):
    def __init__(self, model, dataset, config: TrainConfig, teacher: nn.Module | None,
                 teacher_norm: Normalization | None, info: dict):
        super().__init__(model, dataset, config, "student", info)
        self.info["kd_pixels"] = config.kd_pixels
        self.teacher = teacher
        self.student_norm = dataset.normalization
        self.teacher_norm = teacher_norm or self.student_norm

    def setup(self, device, train_ds) -> None:
        super().setup(device, train_ds)
        if self.teacher is not None:
            self.teacher = self.teacher.to(device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            tc = self.teacher_norm.in_channels
            if tc != self.student_norm.in_channels:
                raise MarsamError(f"the teacher takes {tc}-channel input but the student data is "
                                  f"{self.student_norm.in_channels}-channel; set channels={tc}")

    @torch.no_grad()
    def teacher_logits(self, batch: dict) -> torch.Tensor:
        outs = []
        if self.teacher is not None:
            x = self.teacher_norm.renormalize(batch["x"], self.student_norm)
            outs.append(self.teacher(x).float())
        if "soft" in batch:
            outs.append(batch["soft"].float())
        if not outs:
            raise MarsamError("no teacher output for this batch; give a teacher or decoder checkpoint")
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)

    def loss(self, model, batch):
        logits = self.forward(model, batch)
        t = self.teacher_logits(batch)
        pixels = None
        if self.config.kd_pixels == "all":   # every pixel from inside the image, labelled or not
            pixels = batch.get("valid")
            if pixels is None:
                pixels = torch.ones_like(batch["y"], dtype=torch.bool)
        return distillation_loss(logits, t, batch["y"], self.config.alpha, self.config.temperature,
                                 self.weight, self.focal_gamma, self.config.cwd,
                                 self.label_spec.ignore_index, self.dice, pixels)


def train_student(config: TrainConfig, out_dir: str | os.PathLike, teacher=None, decoder=None,
                  sam_model=None, progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                  train_data: SegmentationDataset | None = None, val_data: SegmentationDataset | None = None,
                  show_progress: bool = False, init=None) -> TrainResult:
    """Train the U-Net student, distilled (``config.distill``) or on labels alone.

    ``init``: start from a trained unet checkpoint (path, ``pretrained:NAME`` or Checkpoint),
    see :mod:`distill.init_weights`.

    ``teacher``: Attention U-Net checkpoint path / Checkpoint / module (default
    ``config.teacher_checkpoint``); ``decoder`` and ``sam_model`` for ``distill_from`` decoder or
    average (default ``config.decoder_checkpoint`` and a SAM from ``config.sam_*``).
    """
    train, val, student, info = prepare_run(config, "unet", dict(base=config.student_base,
                                            stem_stride=config.student_stem_stride), train_data, val_data,
                                            init, show_progress)
    if not config.distill:
        info["distilled"] = False
        task = SupervisedTask(student, train, config, "student", info)
        return fit(task, train, val, config, out_dir, progress, should_stop, show_progress)
    info.update(distilled=True, alpha=config.alpha, temperature=config.temperature,
                distill_from=config.distill_from, cwd=config.cwd)
    t_model, t_norm = None, None
    if config.distill_from in ("teacher", "average"):
        t_pred, info["teacher"] = resolve_model(
            teacher if teacher is not None else config.teacher_checkpoint, "teacher", train.label_spec)
        # a bare module records no normalisation: it is taken to read the student's input
        t_model, t_norm = t_pred.module, t_pred.normalization if t_pred.checkpoint is not None else None
        _check_teacher(t_pred, train)
        if config.teacher_once and config.distill_from == "teacher":
            attach_teacher_soft_labels(train, t_model, t_norm, None if config.device == "auto" else config.device,
                                       config.batch_size, show_progress)
            t_model = None
            info["teacher_once"] = True
    if config.distill_from in ("decoder", "average"):
        from .decoder import attach_decoder_soft_labels
        d_pred, info["decoder"] = resolve_model(
            decoder if decoder is not None else config.decoder_checkpoint, "decoder", train.label_spec)
        attach_decoder_soft_labels(train, d_pred, sam_model, config, show_progress)
    task = DistillTask(student, train, config, t_model, t_norm, info)
    return fit(task, train, val, config, out_dir, progress, should_stop, show_progress)

