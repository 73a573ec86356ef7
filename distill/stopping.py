"""When a training run stops: a user cancel, a wall-clock budget, or early stopping; and how many
epochs fit a budget once one epoch has been timed. Used by :mod:`distill.train_loop`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .distributed import any_rank

StopFn = Callable[[], bool]


def epochs_within_budget(epochs: int, done: int, per_epoch_s: float, elapsed_s: float,
                         budget_s: float, margin: float = 0.97) -> int:
    """How many epochs (at most ``epochs``, at least ``done``) fit ``budget_s`` when ``done`` have
    taken ``elapsed_s`` and one more takes ``per_epoch_s``."""
    more = int(max(0.0, budget_s * margin - elapsed_s) // max(per_epoch_s, 1e-9))
    return max(done, min(epochs, done + more))


@dataclass
class StopPolicy:
    """When to stop: a user cancel, a wall-clock budget or ``patience`` epochs without gain.

    Under DDP every rank must take the same decision (or the others wait forever in all_reduce),
    so the per-batch checks are reduced over ranks.
    """
    device: torch.device
    should_stop: StopFn | None = None
    budget_s: float | None = None
    patience: int = 0
    t_start: float = field(default_factory=time.time)
    bad_epochs: int = 0

    def check_batch(self) -> str | None:
        if self.should_stop is None and self.budget_s is None:
            return None
        if any_rank(bool(self.should_stop and self.should_stop()), self.device):
            return "cancelled"
        if any_rank(self.budget_s is not None and time.time() - self.t_start > self.budget_s, self.device):
            return "time_budget"
        return None

    def cancelled(self) -> bool:
        return bool(self.should_stop and self.should_stop())

    def after_epoch(self, improved: bool) -> bool:
        """True when early stopping says stop."""
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        return bool(self.patience) and self.bad_epochs >= self.patience
