"""Device choice shared by every package: cuda, then mps, then cpu, unless the user says; and
how many CPU threads torch may use on a shared machine."""
from __future__ import annotations

import contextlib
import os

import torch

from .errors import MarsamError


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    if preferred not in (None, "", "auto"):
        dev = torch.device(preferred)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise MarsamError(f"device {preferred!r} asked for, but no CUDA GPU is visible; "
                              "use --device cpu (or leave it out to pick automatically)")
        if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise MarsamError(f"device {preferred!r} asked for, but MPS is not available; use --device cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN with AVX512-BF16 or AMX).
    Without those instructions bf16 is emulated and slower than float32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, enabled: bool = True, cpu_bf16: bool = False):
    """Mixed precision on GPU (bf16 where supported, else fp16). On a CPU a no-op context, unless
    ``cpu_bf16`` and the CPU has native bf16 instructions (:func:`cpu_bf16_supported`): then bf16
    autocast (convolutions and matmuls in bf16, reductions and the loss in float32)."""
    import contextlib
    if enabled and cpu_bf16 and device.type == "cpu" and cpu_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def machine_info(device: torch.device | str | None = None) -> dict:
    """What a measurement ran on, for every report and benchmark: platform, processor, Python,
    torch and its threads, the device (and GPU name) and the load average (on shared machines the
    load says how much the times are inflated)."""
    import os
    import platform
    dev = torch.device(device) if device is not None else torch.device("cpu")
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "device": str(dev)}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    elif torch.cuda.is_available():
        info["gpu_available"] = torch.cuda.get_device_name(0)
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    return info


def default_threads() -> int:
    """Torch threads for model work in napari's workers: every core this process may use.

    The Qt thread mostly sleeps and the kernel wakes it ahead of torch's busy threads: on the
    2-core development machine the longest Qt stall while the decoder trained on both cores was
    under 10 ms, also with another process spinning on one core (``benchmarks/bench_napari_loop.py``
    with ``--busy-cores 1``),
    and the decoder trains 1.5x faster than on one core. (Until issue 16's stalls were found at
    their causes, the workers left a core to the GUI.) ``MARSAM_GUI_THREADS=N`` sets another
    number, e.g. 1 to leave a core to other programs."""
    env = os.environ.get("MARSAM_GUI_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise MarsamError(f"MARSAM_GUI_THREADS must be a whole number of threads, not {env!r}") from None
        if n < 1:
            raise MarsamError(f"MARSAM_GUI_THREADS must be at least 1, not {n}")
        return n
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cores))


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` for the block (None: unchanged), the previous value restored.
    The setting is process-wide, so it also applies to torch calls of other threads meanwhile."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
