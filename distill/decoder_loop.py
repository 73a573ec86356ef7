"""The domain decoder's own training loop: every embedding and target in memory, nothing else per step.

Why not distill's shared loop (:mod:`.train_loop`): that loop is built for datasets that stream
from disk with augmentation (teacher, student) and it does per-epoch bookkeeping that costs more
than a whole decoder epoch on a laptop: a DataLoader collating dict samples, two checkpoints,
the history CSV, a matplotlib plot and the resumable optimiser state written after EVERY epoch.
The decoder's inputs are frozen SAM embeddings, computed once, so here the whole training set
is two tensors (N x 256 x 64 x 64 float32 embeddings, N x S x S int64 targets, S =
``decoder_out_size``) and an epoch is a shuffled slice of them: forward, loss, backward, step.
Checkpoints, history CSV, curve plot and summary are written once, when training ends.

Unlike the shared loop, ``channels_last`` applies on the CPU too: the decoder's transposed
convolutions run about 1.5 times faster on NHWC memory with oneDNN (benchmarks/bench_interactive_cpu.py).

What stays identical to the shared loop (so a decoder trained here is the decoder trained
there): seeding, AdamW, linear warmup then cosine decay per step, inverse-frequency class
weights, (focal) cross-entropy over labelled pixels, validation mIoU per epoch when a
validation set is given, best-by-mIoU weights (kept in memory, written at the end), early
stopping, the time budget, cancellation polled after every step (a cancelled run leaves
``last.safetensors``), and :class:`~.train_loop.TrainResult`. Distributed runs (``torchrun``)
and the continuation of an interrupted run (``resume.safetensors`` present) go through the
shared loop: those are long jobs, where its per-epoch state on disk is what one wants.

Threads: torch's intra-op pool is process-wide. The loop uses ``config.threads`` when set, else
the process's current setting: all cores for ``marsam train decoder`` (a foreground job), and
:func:`~segmodels.device.default_threads` inside napari's workers (``napari_plugin.workers
.worker_threads``: all cores too, unless ``MARSAM_GUI_THREADS`` says otherwise; the Qt thread
still gets its turn within 10 ms). The previous setting is given back when the loop returns.

Precision: on a CPU with native bf16 instructions (AVX512-BF16 or AMX), the forward runs in bf16
autocast (``decoder_cpu_bf16``, default on; weights, optimiser and loss stay float32): 1.52 times
faster on the development machine, the same final loss and the same predicted classes as float32
(``benchmarks/results/interactive_cpu.json``). Elsewhere float32.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from segmodels.atomic import atomic_write_json
from segmodels.checkpoints import save_checkpoint
from segmodels.device import autocast, cpu_bf16_supported, default_threads, pick_device, torch_threads  # noqa: F401 (default_threads re-exported)
from segmodels.errors import MarsamError

from .config import TrainConfig
from .losses import inverse_frequency_weights, segmentation_loss
from .metrics import SegmentationMetrics
from .stopping import StopPolicy
from .train_loop import (ProgressFn, StopFn, TrainResult, make_optimiser, start_run, weight_digest,
                         write_history)

log = logging.getLogger(__name__)


def stack_samples(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One N x 256 x 64 x 64 float32 tensor and one N x S x S int64 tensor from per-sample lists."""
    if not xs:
        raise MarsamError("the training set is empty; label some images first")
    return torch.stack([x.float() for x in xs]).contiguous(), torch.stack([y.long() for y in ys]).contiguous()


@torch.no_grad()
def _validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec, batch_size: int, device, amp: bool,
              cpu_bf16: bool = False) -> dict:
    model.eval()
    metrics = SegmentationMetrics(spec.num_classes, spec.ignore_index)
    for i in range(0, len(x), batch_size):
        with autocast(device, amp or cpu_bf16, cpu_bf16):
            logits = model(x[i:i + batch_size])
        metrics.update(logits.float(), y[i:i + batch_size])
    model.train()
    return metrics.compute(spec.classes)


def fit_in_memory(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                  val: tuple[torch.Tensor, torch.Tensor] | None, config: TrainConfig, out_dir: str | os.PathLike,
                  label_spec, normalization: dict, info: dict, kind: str = "decoder",
                  progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                  show_progress: bool = False, plot: bool = True) -> TrainResult:
    """Train ``model`` on ``train`` = (embeddings, targets), both already in memory; see the module doc.

    ``plot=False`` writes the history CSV without its matplotlib plot: napari passes it, because
    importing matplotlib and rendering with Agg hold the GIL for hundreds of milliseconds, a
    visible stall of the GUI (measured with benchmarks/stall_probe.py)."""
    out_dir = Path(out_dir)
    x_all, y_all = train
    n = len(x_all)
    if n == 0:
        raise MarsamError("the training set is empty; label some images first")
    with torch_threads(config.threads or torch.get_num_threads()) as threads:
        return _fit(model, x_all, y_all, val, config, out_dir, label_spec, normalization,
                    dict(info, torch_threads=threads), kind, progress, should_stop, show_progress, plot)


def _fit(model, x_all, y_all, val, config, out_dir, label_spec, normalization, info, kind,
         progress, should_stop, show_progress, plot) -> TrainResult:
    device = pick_device(config.device)
    start_run(config, out_dir)
    ignore = label_spec.ignore_index
    weight = _class_weights(y_all, label_spec).to(device) if config.class_weights else None
    if weight is not None:
        info["class_weights"] = [round(float(w), 4) for w in weight]
    gamma = config.focal_gamma if config.loss == "focal" else 0.0
    cl = bool(config.channels_last)   # oneDNN (CPU) and cuDNN both run these convolutions faster on NHWC
    model = model.to(device).train()
    model = model.to(memory_format=torch.channels_last) if cl else model
    x_all, y_all = x_all.to(device), y_all.to(device)
    val = (val[0].to(device), val[1].to(device)) if val is not None else None
    n, bs = len(x_all), max(1, int(config.batch_size))
    optimizer, scheduler, scaler, _ = make_optimiser(model, config, math.ceil(n / bs), device)
    bf16 = bool(config.decoder_cpu_bf16) and device.type == "cpu" and cpu_bf16_supported()
    info["cpu_bf16"] = bf16
    gen = torch.Generator().manual_seed(int(config.seed))

    history: list[dict] = []
    best_score, best_epoch = -1.0, 0
    best_state: dict | None = None
    stopped = "completed"
    policy = StopPolicy(device, should_stop, config.max_minutes * 60 if config.max_minutes else None,
                        config.early_stopping)
    epochs = range(config.epochs)
    if show_progress:
        from tqdm import tqdm
        epochs = tqdm(epochs, desc=f"{kind} epochs", unit="epoch", leave=False)
    for epoch in epochs:
        if policy.cancelled():
            stopped = "cancelled"
            break
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen).to(device) if n > 1 else None
        mean_loss, steps, why = _train_epoch(model, x_all, y_all, order, bs, (optimizer, scheduler, scaler),
                                             lambda lg, yb: segmentation_loss(lg, yb, weight, gamma, ignore),
                                             device, config.amp, bf16, cl, policy.check_batch)
        cancelled, late = why == "cancelled", why == "time_budget"
        if not math.isfinite(mean_loss):
            raise MarsamError(f"the {kind} loss became {mean_loss} at epoch {epoch + 1}; lower the learning "
                              "rate (lr) or check the labels")
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": mean_loss}
        if cancelled:
            stopped = "cancelled"
            save_checkpoint(out_dir / "last.safetensors", model, label_spec, normalization,
                            dict(info, kind=kind, config=config.to_dict(), epoch=epoch + 1, partial_epoch=True))
            break
        score = float(epoch)                                # no validation: the last epoch is best
        if val is not None and len(val[0]):
            v = _validate(model, val[0], val[1], label_spec, bs, device, config.amp, bf16)
            row.update(val_miou=v["miou"], val_pixel_accuracy=v["pixel_accuracy"],
                       **{f"val_iou_{k}": m for k, m in v["iou_per_class"].items()})
            score = -1.0 if v["miou"] != v["miou"] else v["miou"]
        row["seconds"] = round(time.perf_counter() - t0, 3)
        if late:
            row["partial_epoch_batches"] = steps
        history.append(row)
        improved = score > best_score
        if improved:
            best_score, best_epoch = score, epoch + 1
            if val is not None:                             # without validation the last epoch is best
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        early = policy.after_epoch(improved)
        if progress is not None:
            progress(epoch + 1, config.epochs, dict(row))
        if late:
            stopped = "time_budget"
            log.warning("time budget of %s min used up in epoch %d; stopping", config.max_minutes, epoch + 1)
            break
        if early and epoch + 1 < config.epochs:
            stopped = "early_stopping"
            log.info("early stopping at epoch %d (best %d)", epoch + 1, best_epoch)
            break
    if stopped == "completed" and len(history) < config.epochs:
        stopped = "cancelled"
    return _finish(model, best_state, history, best_epoch, stopped, config, out_dir, label_spec, normalization,
                   info, kind, n, len(val[0]) if val is not None else 0, device, plot)


def _class_weights(y_all: torch.Tensor, label_spec) -> torch.Tensor:
    """Inverse-frequency class weights (mean 1) from the labelled pixels of all samples."""
    y = y_all[y_all != label_spec.ignore_index].flatten()
    counts = torch.bincount(y, minlength=label_spec.num_classes)
    return inverse_frequency_weights(counts[:label_spec.num_classes].numpy())


def _train_epoch(model, x_all, y_all, order, bs: int, opt, loss_fn, device, amp: bool, bf16: bool, cl: bool,
                 interrupted) -> tuple[float, int, str | None]:
    """One pass over the in-memory samples in ``order`` (None: one batch of all); returns the mean
    loss (one device sync per epoch, not per step), the steps run and why it stopped early, if it did."""
    optimizer, scheduler, scaler = opt
    loss_sum = torch.zeros((), device=device)
    steps, why = 0, None
    for s in range(0, len(x_all), bs):
        if order is None:
            xb, yb = x_all, y_all
        else:
            idx = order[s:s + bs]
            xb, yb = x_all.index_select(0, idx), y_all.index_select(0, idx)
        if cl:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp or bf16, bf16):
            logits = model(xb)
        loss = loss_fn(logits.float() if bf16 else logits, yb)      # the loss in float32
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += loss.detach()
        steps += 1
        why = interrupted()
        if why:
            break
    return float(loss_sum) / max(steps, 1), steps, why


def _write_csv(out_dir: Path, history: list[dict]) -> None:
    write_history(out_dir, history, plot=False)


def _finish(model, best_state, history, best_epoch, stopped, config, out_dir, label_spec, normalization,
            info, kind, n_train, n_val, device, plot) -> TrainResult:
    """Everything written once: last and best checkpoints, history CSV and plot, summary."""
    best_path, last_path = out_dir / "best.safetensors", out_dir / "last.safetensors"
    best_row = next((r for r in history if r["epoch"] == best_epoch), {})
    meta = dict(info, kind=kind, config=config.to_dict(), train_images=n_train)
    if history and not (stopped == "cancelled" and last_path.exists()):
        last = history[-1]
        val = ({"miou": last["val_miou"], "pixel_accuracy": last["val_pixel_accuracy"]} if "val_miou" in last else {})
        save_checkpoint(last_path, model, label_spec, normalization, dict(meta, epoch=last["epoch"], val=val))
    elif not last_path.exists():                        # cancelled before the first epoch ended
        save_checkpoint(last_path, model, label_spec, normalization, dict(meta, epoch=0, partial_epoch=True))
    if best_state is not None and best_row:
        current = {k: t.detach().clone() for k, t in model.state_dict().items()}
        model.load_state_dict(best_state)
        val = {"miou": best_row.get("val_miou"), "pixel_accuracy": best_row.get("val_pixel_accuracy")}
        save_checkpoint(best_path, model, label_spec, normalization, dict(meta, epoch=best_epoch, val=val))
        model.load_state_dict(current)
    else:
        best_path.write_bytes(last_path.read_bytes())
    if plot:
        write_history(out_dir, history)      # CSV and curves.png
    elif history:
        _write_csv(out_dir, history)
    summary = {"kind": kind, "stopped": stopped, "epochs_run": len(history), "best_epoch": best_epoch,
               "best_val_miou": best_row.get("val_miou"), "train_images": n_train, "val_images": n_val,
               "world_size": 1, "device": str(device), "rank_weight_digests": [weight_digest(model)],
               "loop": "in-memory (distill.decoder_loop)",
               "seconds": round(sum(r.get("seconds", 0) for r in history), 1), **info}
    atomic_write_json(out_dir / "summary.json", summary)
    return TrainResult(out_dir, best_path, last_path, history, best_row, len(history), stopped, summary)
