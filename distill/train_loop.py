"""The one training loop behind the teacher, the student and the domain decoder.

What differs between them (the model, how a batch becomes a loss) is a small
:class:`distill.tasks.Task`; everything else lives here once. :func:`fit` reads as the loop it
is: build the batches and the optimiser, then per epoch :func:`train_one_epoch`, :func:`validate`,
hand the scores to a :class:`CheckpointKeeper` (best by val mIoU, last, resumable state) and ask
a :class:`~.stopping.StopPolicy` (cancel, time budget, early stopping) whether to go on. Around it: seeding,
AdamW with linear warmup and cosine decay per step, mixed precision and channels-last on GPU,
batches kept and augmented on the training device (:mod:`distill.batches`), an optional
exponential moving average of the weights (validated and saved instead of the raw weights),
history CSV and curve PNG, resumption from ``resume.safetensors`` (model, EMA, optimiser and
scheduler state, no pickles), progress/cancel callbacks for the napari worker, and DDP.

DDP: the same code runs under ``torchrun``. Each rank trains on its DistributedSampler shard,
validation is sharded and its confusion matrices summed, BatchNorm running statistics are
averaged across ranks at the end of every epoch (DDP only broadcasts them at forward time, so
ranks would otherwise end with different buffers), and rank 0 alone writes files. At the end
every rank's weight digest is gathered into ``summary.json`` so agreement is checked, not assumed.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from segmodels.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from segmodels.checkpoints import save_checkpoint
from segmodels.device import autocast, cpu_bf16_supported
from segmodels.errors import MarsamError

from .batches import DeviceBatches, augment_policy
from .distributed import init_distributed, is_dist, seed_everything, sync_buffers, weight_digest  # noqa: F401 (re-exported)
from .resume import load_state, save_state
from .stopping import StopFn, StopPolicy, epochs_within_budget
from .config import TrainConfig, save_config
from .metrics import SegmentationMetrics
from .tasks import Task

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict], None]


@dataclass
class TrainResult:
    out_dir: Path
    best: Path
    last: Path
    history: list[dict]
    best_metrics: dict
    epochs_run: int
    stopped: str                          #: "completed", "early_stopping", "time_budget" or "cancelled"
    summary: dict = field(default_factory=dict)


# -- outputs ----------------------------------------------------------------------------------

def write_history(out_dir: Path, history: list[dict], plot: bool = True) -> None:
    """``history.csv`` (one row per epoch, the union of the rows' keys) and, with ``plot``, ``curves.png``."""
    if not history:
        return
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic_path(out_dir / "history.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(history)
    if plot:
        plot_curves(out_dir / "curves.png", history)


def plot_curves(path: Path, history: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(ep, [r["train_loss"] for r in history], "o-", label="train loss")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    if any("val_miou" in r for r in history):
        b.plot(ep, [r.get("val_miou", float("nan")) for r in history], "o-", label="val mIoU")
        b.plot(ep, [r.get("val_pixel_accuracy", float("nan")) for r in history], "s--", label="val pixel acc")
        b.set_ylim(0, 1), b.legend()
    b.set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


# -- validation -------------------------------------------------------------------------------

def _device_data_ok(ds, config: TrainConfig) -> bool:
    """Datasets of equal-size images (not the decoder's embeddings) go through device batches."""
    return bool(config.device_batches) and hasattr(ds, "images") and getattr(ds, "size", None)


@torch.no_grad()
def validate(task: Task, model: nn.Module, ds: Dataset, device: torch.device, batch_size: int,
             rank: int = 0, world: int = 1, channels_last: bool = False, amp: bool = True,
             device_batches: bool = False) -> dict:
    """Metrics over the whole of ``ds`` (sharded over ranks and summed)."""
    was = model.training
    model.eval()
    metrics = SegmentationMetrics(task.label_spec.num_classes, task.label_spec.ignore_index)
    idx = list(range(rank, len(ds), world))
    if device_batches:
        loader = DeviceBatches(ds, device, batch_size, order=idx, channels_last=channels_last)
    else:
        loader = DataLoader(torch.utils.data.Subset(ds, idx), batch_size=batch_size, shuffle=False)
    for batch in loader:
        batch = _to_device(batch, device, channels_last)
        with autocast(device, amp):
            logits = task.forward(model, batch)
        metrics.update(logits.float(), batch["y"])
    metrics.all_reduce()
    model.train(was)
    return metrics.compute(task.label_spec.classes)


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if channels_last and v.ndim == 4 and k == "x":
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


# -- the pieces of the loop ---------------------------------------------------------------------

def make_batches(train_ds: Dataset, config: TrainConfig, device: torch.device, rank: int, world: int,
                 channels_last: bool):
    """The epoch's batches: device-resident and augmented there, or a DataLoader (decoder data,
    or ``device_batches=false``); each rank sees its DistributedSampler shard."""
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    if _device_data_ok(train_ds, config):
        aug = augment_policy(config.augment_policy, config.vflip) if config.augment else None
        return sampler, DeviceBatches(train_ds, device, config.batch_size, order=sampler, augment=aug,
                                      channels_last=channels_last, seed=config.seed)
    # (no persistent workers: they would keep a copy of the dataset from before set_epoch, and
    # every epoch would replay the first epoch's augmentations)
    return sampler, DataLoader(train_ds, batch_size=config.batch_size, sampler=sampler,
                               num_workers=config.num_workers, pin_memory=device.type == "cuda")


@dataclass
class WarmupCosine:
    """Learning-rate factor: linear warmup, then cosine decay to 1% of the peak at ``total_steps``
    (which may be shortened once the first epoch has shown how long an epoch takes)."""
    total_steps: int
    warmup: int

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.total_steps - self.warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_ema(model: nn.Module, decay: float):
    """``torch.optim.swa_utils.AveragedModel`` keeping an EMA of weights and BN buffers, or None.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as timm's ModelEmaV3
    does): a fixed 0.995 over the first few hundred steps would keep mostly the random initial
    weights, which is what a short run measured on the GPU (val mIoU 0.10 after 3 epochs)."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel

    @torch.no_grad()
    def ema_update(ema_params, params, num_averaged):
        n = int(num_averaged)
        d = min(float(decay), (1.0 + n) / (10.0 + n))
        fe = [e for e in ema_params if e.is_floating_point()]
        fp = [p for p in params if p.is_floating_point()]
        if fe:
            torch._foreach_lerp_(fe, fp, 1.0 - d)
        for e, p in zip(ema_params, params):   # counters (BN's num_batches_tracked) are copied
            if not e.is_floating_point():
                e.copy_(p)
    return AveragedModel(model, multi_avg_fn=ema_update, use_buffers=True)


def _train_autocast(device: torch.device, config: TrainConfig):
    """GPU: mixed precision when ``amp``; CPU: bf16 autocast when ``train_cpu_bf16`` and the CPU
    has native bf16 instructions (float32 otherwise)."""
    if device.type == "cpu":
        return autocast(device, bool(config.train_cpu_bf16), cpu_bf16=True)
    return autocast(device, config.amp)


def train_one_epoch(task: Task, model: nn.Module, batches, optimizer, scheduler, scaler,
                    config: TrainConfig, device: torch.device, channels_last: bool, ema=None,
                    policy: StopPolicy | None = None, desc: str = "") -> tuple[dict, int, str | None]:
    """One pass over ``batches``; returns (summed loss parts, batches run, interruption or None)."""
    model.train()
    sums: dict[str, float] = {}
    n = 0
    if desc:
        from tqdm import tqdm
        batches = tqdm(batches, desc=desc, unit="batch", leave=False)
    for batch in batches:
        batch = _to_device(batch, device, channels_last)
        with _train_autocast(device, config):
            loss, parts = task.loss(model, batch)
        if not torch.isfinite(loss):
            raise MarsamError(f"the {task.kind} loss became {float(loss)}; lower the learning rate (lr) "
                              "or check the labels")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model.module if hasattr(model, "module") else model)
        n += 1
        sums["train_loss"] = sums.get("train_loss", 0.0) + float(loss.detach())
        for k, v in parts.items():
            sums[f"train_{k}"] = sums.get(f"train_{k}", 0.0) + v
        why = policy.check_batch() if policy is not None else None
        if why:
            return sums, n, why
    return sums, n, None


class CheckpointKeeper:
    """Writes ``last``, ``best`` (by val mIoU; the last epoch when there is no validation) and the
    resumable state after every epoch, on rank 0 only, each atomically."""

    def __init__(self, task: Task, out_dir: Path, ckpt_meta: dict, main: bool):
        self.task, self.out_dir, self.meta, self.main = task, out_dir, ckpt_meta, main
        self.best_path, self.last_path = out_dir / "best.safetensors", out_dir / "last.safetensors"
        self.resume_path = out_dir / "resume.safetensors"
        self.best_score, self.best_epoch = -1.0, 0

    def save(self, path: Path, model: nn.Module, **meta) -> None:
        if self.main:
            save_checkpoint(path, model, self.task.label_spec, self.task.normalization, dict(self.meta, **meta))

    def update_best(self, epoch: int, val: dict | None) -> bool:
        """Record the epoch's score; True when it is the best so far."""
        score = val["miou"] if val is not None else float(epoch)   # no val: the last epoch is best
        score = -1.0 if score != score else score                  # NaN (nothing labelled)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            return True
        return False

    def write(self, epoch: int, model: nn.Module, val: dict | None, improved: bool, history: list[dict],
              optimizer, train_images: int, raw_model: nn.Module, ema_model: nn.Module | None,
              bad_epochs: int) -> None:
        if not self.main:
            return
        summary_val = ({"miou": val["miou"], "pixel_accuracy": val["pixel_accuracy"],
                        "iou_per_class": val["iou_per_class"]} if val else {})
        meta = dict(epoch=epoch, val=summary_val, train_images=train_images)
        self.save(self.last_path, model, **meta)
        if improved:
            self.save(self.best_path, model, **meta)
        write_history(self.out_dir, history)
        save_state(self.resume_path, raw_model, optimizer,
                    {"epoch": epoch, "history": history, "best_miou": self.best_score,
                     "best_epoch": self.best_epoch, "bad_epochs": bad_epochs}, ema_model)

    def finish(self, model: nn.Module, summary: dict) -> None:
        if not self.main:
            return
        if not self.last_path.exists():   # cancelled before the first epoch ended
            self.save(self.last_path, model, epoch=0, partial_epoch=True)
        if not self.best_path.exists():
            atomic_write_bytes(self.best_path, self.last_path.read_bytes())
        atomic_write_json(self.out_dir / "summary.json", summary)


# -- the loop ---------------------------------------------------------------------------------

def fit(task: Task, train_ds: Dataset, val_ds: Dataset | None, config: TrainConfig,
        out_dir: str | os.PathLike, progress: ProgressFn | None = None,
        should_stop: StopFn | None = None, show_progress: bool = False) -> TrainResult:
    """Train ``task.model`` on ``train_ds``; writes checkpoints and reports to ``out_dir`` (rank 0)."""
    out_dir = Path(out_dir)
    if len(train_ds) == 0:
        raise MarsamError("the training set is empty; label some images first")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    device, rank, world, created = init_distributed(config)
    try:
        return _fit(task, train_ds, val_ds, config, out_dir, progress, should_stop, show_progress,
                    device, rank, world)
    finally:
        if created:
            dist.destroy_process_group()


def _fit(task, train_ds, val_ds, config, out_dir, progress, should_stop, show_progress,
         device, rank, world) -> TrainResult:
    main = rank == 0
    start_run(config, out_dir, write=main)
    model = task.model.to(device)
    cl = config.channels_last and device.type == "cuda"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    task.setup(device, train_ds)
    sampler, batches = make_batches(train_ds, config, device, rank, world, cl)
    steps_per_epoch = max(1, len(batches))
    planned_epochs = config.epochs
    optimizer, scheduler, scaler, lr_at = make_optimiser(model, config, steps_per_epoch, device)
    ema = make_ema(model, config.ema)
    keeper = CheckpointKeeper(task, out_dir, {"kind": task.kind, "config": config.to_dict(), **task.info}, main)
    policy = StopPolicy(device, should_stop, config.max_minutes * 60 if config.max_minutes else None,
                        config.early_stopping)

    history: list[dict] = []
    start_epoch = 0
    if config.resume and keeper.resume_path.is_file():
        start_epoch, history = _resume(keeper, policy, model, optimizer, scheduler, ema, lr_at, steps_per_epoch, main)
    ddp_model = model if world == 1 else nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    eval_model = ema.module if ema is not None else model
    val_on_device = val_ds is not None and _device_data_ok(val_ds, config)

    stopped = "completed"
    for epoch in range(start_epoch, config.epochs):
        if policy.cancelled() or epoch >= planned_epochs:
            break
        for source in (sampler, batches, train_ds):      # shuffling and augmentation draws per epoch
            if hasattr(source, "set_epoch"):
                source.set_epoch(epoch)
        t0 = time.time()
        desc = f"{task.kind} epoch {epoch + 1}/{config.epochs}" if show_progress and main else ""
        sums, n, interrupted = train_one_epoch(task, ddp_model, batches, optimizer, scheduler, scaler,
                                               config, device, cl, ema, policy, desc)
        sync_buffers(model)
        if ema is not None:
            sync_buffers(ema.module)
        if interrupted == "cancelled":
            stopped = "cancelled"
            keeper.save(keeper.last_path, eval_model, epoch=epoch + 1, partial_epoch=True)
            break
        val = None
        if val_ds is not None and len(val_ds):
            val = validate(task, eval_model, val_ds, device, config.batch_size, rank, world, cl, config.amp,
                           val_on_device)
        row = _epoch_row(epoch, optimizer, sums, n, val, time.time() - t0, len(train_ds), config.batch_size)
        if interrupted == "time_budget":
            row["partial_epoch_batches"] = n
        history.append(row)
        if (config.fit_epochs_to_budget and policy.budget_s and interrupted is None
                and epoch == min(start_epoch + 1, config.epochs - 1)):
            # the second epoch (the first pays for warm-up: device copies, autotuning) says how many
            # fit the budget: shorten the plan, and the cosine schedule with it, to that
            planned_epochs = _plan_to_budget(config, epoch, time.time() - t0, policy, planned_epochs,
                                             lr_at, steps_per_epoch, main)
        improved = keeper.update_best(epoch + 1, val)
        early = policy.after_epoch(improved)
        keeper.write(epoch + 1, eval_model, val, improved, history, optimizer, len(train_ds), model,
                     ema.module if ema is not None else None, policy.bad_epochs)
        if is_dist():
            dist.barrier()
        if progress:
            progress(epoch + 1, config.epochs, dict(row))
        why = _stop_after_epoch(interrupted, early and epoch + 1 < planned_epochs, epoch, n, config,
                                keeper.best_epoch, main)
        if why:
            stopped = why
            break
    if stopped == "completed" and (not history or history[-1]["epoch"] < planned_epochs):
        stopped = "cancelled"

    best_row = next((r for r in history if r["epoch"] == keeper.best_epoch), {})
    summary = _summary(task, config, history, keeper, best_row, stopped, planned_epochs, train_ds, val_ds,
                       device, world, eval_model)
    keeper.finish(eval_model, summary)
    if is_dist():
        dist.barrier()
    return TrainResult(out_dir, keeper.best_path, keeper.last_path, history, best_row, len(history),
                       stopped, summary)


def start_run(config: TrainConfig, out_dir: Path, write: bool = True) -> None:
    """Seed everything; create ``out_dir`` with the run's config.yaml (``write``: rank 0 only)."""
    seed_everything(config.seed)
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")


def make_optimiser(model: nn.Module, config: TrainConfig, steps_per_epoch: int, device: torch.device):
    """AdamW over the trainable parameters, its per-step schedule (a :class:`WarmupCosine` over
    ``config.epochs``, returned too: budget fitting shortens it), and the fp16 loss scaler (GPUs
    without bf16 only); the decoder's in-memory loop uses them too."""
    lr_at = WarmupCosine(steps_per_epoch * config.epochs, int(round(config.warmup_epochs * steps_per_epoch)))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    use_scaler = device.type == "cuda" and config.amp and not torch.cuda.is_bf16_supported()
    return optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=use_scaler), lr_at


def _stop_after_epoch(interrupted: str | None, early: bool, epoch: int, n: int, config: TrainConfig,
                      best_epoch: int, main: bool) -> str | None:
    """"time_budget" or "early_stopping" when the run ends after this epoch (logged), else None."""
    if interrupted == "time_budget":
        if main:
            log.warning("time budget of %s min used up after %d batches of epoch %d; stopping",
                        config.max_minutes, n, epoch + 1)
        return "time_budget"
    if early:
        if main:
            log.info("early stopping at epoch %d (best %d)", epoch + 1, best_epoch)
        return "early_stopping"
    return None


def _epoch_row(epoch: int, optimizer, sums: dict, n: int, val: dict | None, seconds: float,
               train_images: int, batch_size: int) -> dict:
    """One line of history.csv: epoch, lr, mean training losses, val scores, time and speed."""
    row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
    row.update({k: v / max(n, 1) for k, v in sums.items()})
    if val is not None:
        row["val_miou"] = val["miou"]
        row["val_pixel_accuracy"] = val["pixel_accuracy"]
        row.update({f"val_iou_{k}": v for k, v in val["iou_per_class"].items()})
    row["seconds"] = round(seconds, 2)
    row["images_per_second"] = round(min(train_images, n * batch_size) / max(row["seconds"], 1e-9), 1)
    return row


def _plan_to_budget(config: TrainConfig, epoch: int, epoch_s: float, policy: StopPolicy, planned: int,
                    lr_at: WarmupCosine, steps_per_epoch: int, main: bool) -> int:
    """The epochs that fit ``max_minutes`` at this epoch's speed; the cosine schedule shortened to them."""
    fit_n = epochs_within_budget(config.epochs, epoch + 1, epoch_s, time.time() - policy.t_start,
                                 policy.budget_s)
    if fit_n >= planned:
        return planned
    lr_at.total_steps = steps_per_epoch * fit_n
    if main:
        log.warning("%d of %d epochs fit the %s min budget at %.1f s per epoch; training %d",
                    fit_n, config.epochs, config.max_minutes, epoch_s, fit_n)
    return fit_n


def _resume(keeper: CheckpointKeeper, policy: StopPolicy, model, optimizer, scheduler, ema, lr_at,
            steps_per_epoch: int, main: bool) -> tuple[int, list[dict]]:
    """Model, EMA, optimiser, schedule position and bookkeeping from ``resume.safetensors``."""
    meta = load_state(keeper.resume_path, model, optimizer, ema)
    start_epoch = int(meta["epoch"])
    keeper.best_score, keeper.best_epoch = float(meta.get("best_miou", -1.0)), int(meta.get("best_epoch", 0))
    policy.bad_epochs = int(meta.get("bad_epochs", 0))
    scheduler.last_epoch = start_epoch * steps_per_epoch
    for g, base in zip(optimizer.param_groups, scheduler.base_lrs):
        g["lr"] = base * lr_at(scheduler.last_epoch)
    if main:
        log.info("resumed from %s at epoch %d", keeper.resume_path, start_epoch)
    return start_epoch, meta.get("history", [])


def _summary(task, config: TrainConfig, history: list[dict], keeper: CheckpointKeeper, best_row: dict,
             stopped: str, planned_epochs: int, train_ds, val_ds, device, world: int, eval_model) -> dict:
    """``summary.json``: how the run ended, its best epoch, its data, speed and every rank's weight digest."""
    digests = [weight_digest(eval_model)]
    if is_dist():
        gathered: list = [None] * world
        dist.all_gather_object(gathered, digests[0])
        digests = gathered
    return {"kind": task.kind, "stopped": stopped, "epochs_run": len(history),
            "best_epoch": keeper.best_epoch, "best_val_miou": best_row.get("val_miou"),
            "train_images": len(train_ds), "val_images": len(val_ds) if val_ds is not None else 0,
            "world_size": world, "device": str(device), "rank_weight_digests": digests,
            "epochs_planned": planned_epochs, "ema": config.ema,
            "cpu_bf16": bool(device.type == "cpu" and config.train_cpu_bf16 and cpu_bf16_supported()),
            "seconds": round(sum(r.get("seconds", 0) for r in history), 1),
            "images_per_second": (round(float(np.median([r["images_per_second"] for r in history])), 1)
                                  if history else None), **task.info}


def describe_result(r: TrainResult) -> str:
    s = f"{r.summary.get('kind', 'model')}: {r.epochs_run} epochs ({r.stopped}), best {r.best}"
    if r.best_metrics.get("val_miou") is not None:
        s += f", val mIoU {r.best_metrics['val_miou']:.4f}"
    return s
