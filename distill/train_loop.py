"""The one training loop behind the teacher, the student and the domain decoder.

What differs between them (the model, how a batch becomes a loss) is a small :class:`Task`;
everything else lives here once: seeding, AdamW with linear warmup and cosine decay per step,
mixed precision and channels-last on GPU, inverse-frequency class weights, validation mIoU
accumulated over the whole split, the best checkpoint kept by that mIoU, early stopping,
history CSV and curve PNG, resumption from ``resume.safetensors`` (model, optimiser and
scheduler state, no pickles), progress/cancel callbacks for the napari worker, and DDP.

DDP: the same code runs under ``torchrun``. Each rank trains on its DistributedSampler shard,
validation is sharded and its confusion matrices summed, BatchNorm running statistics are
averaged across ranks at the end of every epoch (DDP only broadcasts them at forward time, so
ranks would otherwise end with different buffers), and rank 0 alone writes files. At the end
every rank's weight digest is gathered into ``summary.json`` so agreement is checked, not assumed.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
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
from segmodels.device import autocast, pick_device
from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec

from .config import TrainConfig, save_config
from .metrics import SegmentationMetrics

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict], None]
StopFn = Callable[[], bool]


class Task:
    """How one kind of model learns; subclasses set ``model`` and may override the hooks."""
    kind = "model"

    def __init__(self, model: nn.Module, label_spec: LabelSpec, normalization: dict,
                 info: dict | None = None):
        self.model = model
        self.label_spec = label_spec
        self.normalization = normalization
        self.info = dict(info or {})

    def setup(self, device: torch.device, train_ds: Dataset) -> None:
        """Move helpers (teachers, class weights) to ``device`` before the first epoch."""

    def forward(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return model(batch["x"])

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:  # pragma: no cover
        raise NotImplementedError


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


# -- distributed helpers ----------------------------------------------------------------------

def _init_distributed(config: TrainConfig) -> tuple[torch.device, int, int, bool]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(config.device)
    if world <= 1:
        return device, 0, 1, False
    created = False
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    return device, dist.get_rank(), dist.get_world_size(), created


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _sync_buffers(model: nn.Module) -> None:
    """Average floating buffers (BatchNorm running stats) over ranks so all ranks match."""
    if not _is_dist():
        return
    world = dist.get_world_size()
    for b in model.buffers():
        if b.dtype.is_floating_point:
            dist.all_reduce(b.data)
            b.data /= world


def _any_rank(flag: bool, device: torch.device) -> bool:
    if not _is_dist():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def weight_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- resumable state (safetensors + JSON, never pickles) --------------------------------------

def _save_state(path: Path, model: nn.Module, optimizer, meta: dict) -> None:
    from safetensors.torch import save_file
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars = {}
    for pid, st in opt["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = v
    meta = dict(meta, param_groups=opt["param_groups"], opt_scalars=scalars)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"marsam-resume": json.dumps(meta)})


def _load_state(path: Path, model: nn.Module, optimizer) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["marsam-resume"])
        tensors = load_file(str(path))
    except Exception as e:
        raise MarsamError(f"cannot resume from {path} ({e}); delete it to start over, or set resume=false") from None
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError:
        raise MarsamError(f"{path} holds a different model than these settings build; use another "
                          "output folder, or set resume=false to overwrite it") from None
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for k, v in meta.get("opt_scalars", {}).items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


# -- outputs ----------------------------------------------------------------------------------

def write_history(out_dir: Path, history: list[dict]) -> None:
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

@torch.no_grad()
def validate(task: Task, model: nn.Module, ds: Dataset, device: torch.device, batch_size: int,
             rank: int = 0, world: int = 1, channels_last: bool = False, amp: bool = True) -> dict:
    """Metrics over the whole of ``ds`` (sharded over ranks and summed)."""
    was = model.training
    model.eval()
    metrics = SegmentationMetrics(task.label_spec.num_classes, task.label_spec.ignore_index)
    idx = list(range(rank, len(ds), world))
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
    device, rank, world, created = _init_distributed(config)
    try:
        return _fit(task, train_ds, val_ds, config, out_dir, progress, should_stop, show_progress,
                    device, rank, world)
    finally:
        if created:
            dist.destroy_process_group()


def _fit(task, train_ds, val_ds, config, out_dir, progress, should_stop, show_progress,
         device, rank, world) -> TrainResult:
    main = rank == 0
    seed_everything(config.seed)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
    model = task.model.to(device)
    cl = config.channels_last and device.type == "cuda"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    task.setup(device, train_ds)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    loader = DataLoader(train_ds, batch_size=config.batch_size, sampler=sampler,
                        num_workers=config.num_workers, pin_memory=device.type == "cuda")
    # (no persistent workers: they would keep a copy of the dataset from before set_epoch, and
    # every epoch would replay the first epoch's augmentations)
    steps_per_epoch = max(1, len(loader))
    total_steps = steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    use_scaler = device.type == "cuda" and config.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    history: list[dict] = []
    best_miou, best_epoch, bad_epochs, start_epoch = -1.0, 0, 0, 0
    resume_path = out_dir / "resume.safetensors"
    if config.resume and resume_path.is_file():
        meta = _load_state(resume_path, model, optimizer)
        start_epoch = int(meta["epoch"])
        history = meta.get("history", [])
        best_miou, best_epoch = float(meta.get("best_miou", -1.0)), int(meta.get("best_epoch", 0))
        bad_epochs = int(meta.get("bad_epochs", 0))
        scheduler.last_epoch = start_epoch * steps_per_epoch
        for g, base in zip(optimizer.param_groups, scheduler.base_lrs):
            g["lr"] = base * lr_at(scheduler.last_epoch)
        if main:
            log.info("resumed from %s at epoch %d", resume_path, start_epoch)

    ddp_model = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    ckpt_meta = {"kind": task.kind, "config": config.to_dict(), **task.info}
    best_path, last_path = out_dir / "best.safetensors", out_dir / "last.safetensors"
    stopped = "completed"
    epoch = start_epoch
    t_start = time.time()
    budget = config.max_minutes * 60 if config.max_minutes else None
    over_budget = False
    for epoch in range(start_epoch, config.epochs):
        if (should_stop and should_stop()) or (stopped == "early_stopping"):
            break
        sampler.set_epoch(epoch)
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        ddp_model.train()
        t0 = time.time()
        sums: dict[str, float] = {}
        n = 0
        it = loader
        if show_progress and main:
            from tqdm import tqdm
            it = tqdm(loader, desc=f"{task.kind} epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False)
        cancelled = False
        for batch in it:
            batch = _to_device(batch, device, cl)
            with autocast(device, config.amp):
                loss, parts = task.loss(ddp_model, batch)
            if not torch.isfinite(loss):
                raise MarsamError(f"the {task.kind} loss became {float(loss)} at epoch {epoch + 1}; "
                                  "lower the learning rate (lr) or check the labels")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n += 1
            sums["train_loss"] = sums.get("train_loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                sums[f"train_{k}"] = sums.get(f"train_{k}", 0.0) + v
            if should_stop is not None or budget is not None:
                # every rank must take the same decision, or the others wait forever in all_reduce
                cancel = _any_rank(bool(should_stop and should_stop()), device)
                late = _any_rank(budget is not None and time.time() - t_start > budget, device)
                if cancel:
                    cancelled = True
                    break
                if late:
                    over_budget = True   # end this epoch here; it is still validated and kept
                    break
        _sync_buffers(model)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        row.update({k: v / max(n, 1) for k, v in sums.items()})
        if cancelled:
            stopped = "cancelled"
            if main:
                save_checkpoint(last_path, model, task.label_spec, task.normalization,
                                dict(ckpt_meta, epoch=epoch + 1, partial_epoch=True))
            break
        val = None
        if val_ds is not None and len(val_ds):
            val = validate(task, model, val_ds, device, config.batch_size, rank, world, cl, config.amp)
            row["val_miou"] = val["miou"]
            row["val_pixel_accuracy"] = val["pixel_accuracy"]
            row.update({f"val_iou_{k}": v for k, v in val["iou_per_class"].items()})
        row["seconds"] = round(time.time() - t0, 2)
        if over_budget:
            row["partial_epoch_batches"] = n
        history.append(row)
        score = val["miou"] if val is not None else float(epoch)   # no val: the last epoch is best
        score = -1.0 if score != score else score                  # NaN (nothing labelled)
        improved = score > best_miou
        if improved:
            best_miou, best_epoch, bad_epochs = score, epoch + 1, 0
        else:
            bad_epochs += 1
        if main:
            summary_val = ({"miou": val["miou"], "pixel_accuracy": val["pixel_accuracy"],
                            "iou_per_class": val["iou_per_class"]} if val else {})
            meta = dict(ckpt_meta, epoch=epoch + 1, val=summary_val, train_images=len(train_ds))
            save_checkpoint(last_path, model, task.label_spec, task.normalization, meta)
            if improved:
                save_checkpoint(best_path, model, task.label_spec, task.normalization, meta)
            write_history(out_dir, history)
            _save_state(resume_path, model, optimizer,
                        {"epoch": epoch + 1, "history": history, "best_miou": best_miou,
                         "best_epoch": best_epoch, "bad_epochs": bad_epochs})
        if _is_dist():
            dist.barrier()
        if progress:
            progress(epoch + 1, config.epochs, dict(row))
        if over_budget:
            stopped = "time_budget"
            if main:
                log.warning("time budget of %s min used up after %d batches of epoch %d; stopping",
                            config.max_minutes, n, epoch + 1)
            break
        if config.early_stopping and bad_epochs >= config.early_stopping and epoch + 1 < config.epochs:
            stopped = "early_stopping"
            if main:
                log.info("early stopping at epoch %d (best %d)", epoch + 1, best_epoch)
    if stopped == "completed" and (not history or history[-1]["epoch"] < config.epochs):
        stopped = "cancelled"

    digests = [weight_digest(model)]
    if _is_dist():
        gathered: list = [None] * world
        dist.all_gather_object(gathered, digests[0])
        digests = gathered
    best_row = next((r for r in history if r["epoch"] == best_epoch), {})
    summary = {"kind": task.kind, "stopped": stopped, "epochs_run": len(history),
               "best_epoch": best_epoch, "best_val_miou": best_row.get("val_miou"),
               "train_images": len(train_ds), "val_images": len(val_ds) if val_ds is not None else 0,
               "world_size": world, "device": str(device), "rank_weight_digests": digests,
               "seconds": round(sum(r.get("seconds", 0) for r in history), 1), **task.info}
    if main:
        if not last_path.exists():   # cancelled before the first epoch ended
            save_checkpoint(last_path, model, task.label_spec, task.normalization,
                            dict(ckpt_meta, epoch=0, partial_epoch=True))
        if not best_path.exists():
            atomic_write_bytes(best_path, last_path.read_bytes())
        atomic_write_json(out_dir / "summary.json", summary)
    if _is_dist():
        dist.barrier()
    return TrainResult(out_dir, best_path, last_path, history, best_row, len(history), stopped, summary)


def describe_result(r: TrainResult) -> str:
    s = f"{r.summary.get('kind', 'model')}: {r.epochs_run} epochs ({r.stopped}), best {r.best}"
    if r.best_metrics.get("val_miou") is not None:
        s += f", val mIoU {r.best_metrics['val_miou']:.4f}"
    return s

