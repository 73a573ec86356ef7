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
import torch
from torch import nn

from segmodels.checkpoints import Checkpoint, load_checkpoint
from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec
from segmodels.networks import build_model

from .config import TrainConfig
from .data import SegmentationDataset
from .losses import distillation_loss
from .teacher import SupervisedTask, data_info, open_train_val
from .train_loop import ProgressFn, StopFn, TrainResult, fit, seed_everything


def resolve_model(obj, what: str, label_spec: LabelSpec) -> tuple[nn.Module, dict, str]:
    """A model from a checkpoint path, a Checkpoint or a module; label spec checked."""
    if obj is None:
        raise MarsamError(f"distillation needs a {what}: give its checkpoint (--teacher PATH or "
                          f"{what}_checkpoint in the config), or set distill=false for a label-only student")
    if isinstance(obj, (str, os.PathLike)):
        obj = load_checkpoint(obj)
    if isinstance(obj, Checkpoint):
        if obj.label_spec.classes != label_spec.classes:
            raise MarsamError(f"the {what} {obj.path} was trained on classes {list(obj.label_spec.classes)} "
                              f"but the student's labels are {list(label_spec.classes)}; use a {what} "
                              "trained with the same label spec")
        return obj.model, obj.normalization, str(obj.path)
    if isinstance(obj, nn.Module):
        k = getattr(obj, "num_classes", label_spec.num_classes)
        if k != label_spec.num_classes:
            raise MarsamError(f"the {what} predicts {k} classes but the labels have {label_spec.num_classes}")
        return obj, {}, type(obj).__name__
    raise MarsamError(f"cannot use {type(obj).__name__} as a {what}; give a checkpoint path or a model")


class DistillTask(SupervisedTask):
    def __init__(self, model, dataset, config: TrainConfig, teacher: nn.Module | None,
                 teacher_norm: dict, info: dict):
        super().__init__(model, dataset, config, "student", info)
        self.teacher = teacher
        self.teacher_norm = teacher_norm or {}
        self.student_norm = dataset.normalization

    def setup(self, device, train_ds) -> None:
        super().setup(device, train_ds)
        if self.teacher is not None:
            self.teacher = self.teacher.to(device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            tc = int(self.teacher_norm.get("in_channels", self.student_norm["in_channels"]))
            if tc != self.student_norm["in_channels"]:
                raise MarsamError(f"the teacher takes {tc}-channel input but the student data is "
                                  f"{self.student_norm['in_channels']}-channel; set channels={tc}")

    @torch.no_grad()
    def teacher_logits(self, batch: dict) -> torch.Tensor:
        outs = []
        if self.teacher is not None:
            x = batch["x"]
            tm, ts = self.teacher_norm.get("mean"), self.teacher_norm.get("std")
            if tm is not None and (tm, ts) != (self.student_norm["mean"], self.student_norm["std"]):
                x = (x * self.student_norm["std"] + self.student_norm["mean"] - tm) / ts
            outs.append(self.teacher(x).float())
        if "soft" in batch:
            outs.append(batch["soft"].float())
        if not outs:
            raise MarsamError("no teacher output for this batch; give a teacher or decoder checkpoint")
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)

    def loss(self, model, batch):
        logits = self.forward(model, batch)
        t = self.teacher_logits(batch)
        return distillation_loss(logits, t, batch["y"], self.config.alpha, self.config.temperature,
                                 self.weight, self.focal_gamma, self.config.cwd,
                                 self.label_spec.ignore_index)


def train_student(config: TrainConfig, out_dir: str | os.PathLike, teacher=None, decoder=None,
                  sam_model=None, progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                  train_data: SegmentationDataset | None = None, val_data: SegmentationDataset | None = None,
                  show_progress: bool = False) -> TrainResult:
    """Train the U-Net student, distilled (``config.distill``) or on labels alone.

    ``teacher``: Attention U-Net checkpoint path / Checkpoint / module (default
    ``config.teacher_checkpoint``); ``decoder`` and ``sam_model`` for ``distill_from`` decoder or
    average (default ``config.decoder_checkpoint`` and a SAM from ``config.sam_*``).
    """
    train, val = open_train_val(config, train_data, val_data, show_progress)
    seed_everything(config.seed)   # same seed -> same initial weights (e.g. distilled vs label-only)
    student = build_model("unet", in_channels=train.channels, num_classes=train.label_spec.num_classes,
                          base=config.student_base)
    info = data_info(train, val)
    if not config.distill:
        info["distilled"] = False
        task = SupervisedTask(student, train, config, "student", info)
        return fit(task, train, val, config, out_dir, progress, should_stop, show_progress)
    info.update(distilled=True, alpha=config.alpha, temperature=config.temperature,
                distill_from=config.distill_from, cwd=config.cwd)
    t_model, t_norm = None, {}
    if config.distill_from in ("teacher", "average"):
        t_model, t_norm, info["teacher"] = resolve_model(
            teacher if teacher is not None else config.teacher_checkpoint, "teacher", train.label_spec)
    if config.distill_from in ("decoder", "average"):
        from .decoder import attach_decoder_soft_labels
        d_model, _, info["decoder"] = resolve_model(
            decoder if decoder is not None else config.decoder_checkpoint, "decoder", train.label_spec)
        attach_decoder_soft_labels(train, d_model, sam_model, config, show_progress)
    task = DistillTask(student, train, config, t_model, t_norm, info)
    return fit(task, train, val, config, out_dir, progress, should_stop, show_progress)

