"""How each kind of model learns: the :class:`Task` base and the supervised task on labels.

The training loop (:mod:`distill.train_loop`) is the same for every model; what differs is a
small task object: the model, its label spec and input normalisation, the setup it needs on the
device (class weights, a frozen teacher) and how a batch becomes a loss. The supervised task
trains the Attention U-Net teacher, the domain decoder and the label-only student; the
distillation task (:mod:`distill.student`) extends it with a teacher's soft labels.
"""
from __future__ import annotations

import torch
from torch import nn

from segmodels.labels import LabelSpec

from .config import TrainConfig
from .losses import class_weights, dice_loss, segmentation_loss


class Task:
    """How one kind of model learns; subclasses set ``model`` and may override the hooks."""
    kind = "model"

    def __init__(self, model: nn.Module, label_spec: LabelSpec, normalization: dict,
                 info: dict | None = None):
        self.model = model
        self.label_spec = label_spec
        self.normalization = normalization
        self.info = dict(info or {})

    def setup(self, device: torch.device, train_ds) -> None:
        """Move helpers (teachers, class weights) to ``device`` before the first epoch."""

    def forward(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return model(batch["x"])

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:  # pragma: no cover
        raise NotImplementedError


class SupervisedTask(Task):
    """Labels only: CE (focal with ``loss=focal``, plus Dice with ``loss=ce+dice``) with the
    class weighting the config names."""

    def __init__(self, model: nn.Module, dataset, config: TrainConfig, kind: str,
                 info: dict | None = None):
        super().__init__(model, dataset.label_spec, dataset.normalization, info)
        self.kind = kind
        self.config = config
        self.weight: torch.Tensor | None = None

    def setup(self, device, train_ds) -> None:
        if self.config.class_weights and hasattr(train_ds, "class_counts"):
            w = class_weights(train_ds.class_counts(), self.config.class_weighting)
            if w is not None:
                self.weight = w.to(device)
                self.info["class_weights"] = [round(float(v), 4) for v in self.weight]
                self.info["class_weighting"] = self.config.class_weighting

    @property
    def focal_gamma(self) -> float:
        return self.config.focal_gamma if self.config.loss == "focal" else 0.0

    @property
    def dice(self) -> float:
        return self.config.dice_weight if self.config.loss == "ce+dice" else 0.0

    def loss(self, model, batch):
        logits = self.forward(model, batch)
        loss = segmentation_loss(logits, batch["y"], self.weight, self.focal_gamma,
                                 self.label_spec.ignore_index)
        parts = {}
        if self.dice:
            d = dice_loss(logits, batch["y"], self.label_spec.ignore_index)
            loss = loss + self.dice * d
            parts["dice"] = float(d.detach())
        return loss, parts
