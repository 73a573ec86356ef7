"""Supervised training on labels: the Attention U-Net teacher (and the label-only student).

The teacher learns from labels alone (:class:`distill.tasks.SupervisedTask`: the loss and class
weighting the config names); the same task trains a student without a teacher, which is the
baseline the distilled student has to beat with the same seed and schedule.
"""
from __future__ import annotations

import os

from segmodels.errors import MarsamError
from segmodels.networks import build_model

from .config import TrainConfig
from .data import SegmentationDataset, open_dataset
from .tasks import SupervisedTask
from .train_loop import ProgressFn, StopFn, TrainResult, fit, seed_everything


def open_train_val(config: TrainConfig, train_data: SegmentationDataset | None = None,
                   val_data: SegmentationDataset | None = None, progress: bool = False
                   ) -> tuple[SegmentationDataset, SegmentationDataset | None]:
    """The training and validation sets a config names (already opened ones are kept)."""
    if train_data is None:
        train_data = open_dataset(config.data, config.train_split, config.size, config.channels,
                                  augment=config.augment, label_spec=config.labels, limit=config.limit,
                                  seed=config.seed, progress=progress)
        if config.augment and train_data.augment is not None:
            train_data.augment.vflip = 0.5 if config.vflip else 0.0
    if val_data is None and config.val_split:
        val_data = open_dataset(config.data, config.val_split, config.size, config.channels,
                                augment=False, label_spec=train_data.label_spec, limit=config.val_limit,
                                seed=config.seed, progress=progress)
    if val_data is not None and val_data.label_spec != train_data.label_spec:
        raise MarsamError(f"validation labels use spec {val_data.label_spec.name!r} but training labels "
                          f"use {train_data.label_spec.name!r}; use one label spec for both")
    return train_data, val_data


def data_info(train: SegmentationDataset, val: SegmentationDataset | None) -> dict:
    return {"data": {"source": train.source, "train_split": train.split, "train_images": len(train),
                     "train_skipped": len(train.skipped), "size": train.size, "channels": train.channels,
                     "val_split": val.split if val is not None else None,
                     "val_images": len(val) if val is not None else 0,
                     # what was left out and why (first 50), so a run's data can be audited
                     "skipped": [f"{i}: {why}" for i, why in train.skipped[:50]]}}


def prepare_run(config: TrainConfig, model_name: str, model_args: dict, train_data=None, val_data=None,
                init=None, show_progress: bool = False):
    """What every U-Net training starts with: the data, the seeded model (same seed, same initial
    weights: distilled vs label-only), its run info, and fine-tuning weights when ``init`` names
    them (:mod:`distill.init_weights`)."""
    train, val = open_train_val(config, train_data, val_data, show_progress)
    seed_everything(config.seed)
    model = build_model(model_name, in_channels=train.channels, num_classes=train.label_spec.num_classes,
                        **model_args)
    info = data_info(train, val)
    if init is not None:
        from .init_weights import init_from_checkpoint
        info["init"] = init_from_checkpoint(model, init, train.label_spec)
    return train, val, model, info


def train_teacher(config: TrainConfig, out_dir: str | os.PathLike, progress: ProgressFn | None = None,
                  should_stop: StopFn | None = None, train_data: SegmentationDataset | None = None,
                  val_data: SegmentationDataset | None = None, show_progress: bool = False,
                  init=None) -> TrainResult:
    """Train the Attention U-Net teacher on labels; best checkpoint by val mIoU in ``out_dir``
    (``init``: start from a trained attention_unet checkpoint, see :mod:`distill.init_weights`)."""
    train, val, model, info = prepare_run(config, "attention_unet", dict(base=config.teacher_base,
                                          dropout=config.teacher_dropout), train_data, val_data, init, show_progress)
    task = SupervisedTask(model, train, config, "teacher", info)
    return fit(task, train, val, config, out_dir, progress, should_stop, show_progress)
