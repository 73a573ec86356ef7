"""Training settings: one dataclass, two shipped profiles, YAML files and command-line overrides.

A profile (``cpu`` or ``gpu``, package data in ``distill/configs``) or any YAML file gives the
values; ``key=value`` overrides from the command line win over both. As in timm, the YAML keys
are exactly the field names of :class:`TrainConfig`, so a file written from a run's
``config.yaml`` reproduces the run.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import yaml

from segmodels.errors import MarsamError

CONFIG_DIR = Path(__file__).parent / "configs"
PROFILES = ("cpu", "gpu")


@dataclass
class TrainConfig:
    # data
    data: str = "hassanjbara/AI4MARS"  #: HF hub id, saved HF dataset, images/+masks/ folder or session
    train_split: str = "train"
    val_split: str | None = "val"      #: None: no validation (the last epoch is kept as "best")
    labels: str = "ai4mars"            #: label spec name (sessions carry their own)
    size: int = 256                    #: images and masks are resized to size x size
    channels: int = 1                  #: 1 (grey) or 3 (RGB) model input
    limit: int | None = None           #: first N training images (deterministic subset)
    val_limit: int | None = None       #: first N validation images
    augment: bool = True
    augment_policy: str = "basic"      #: none | flip | basic | strong (distill.batches.AUGMENT_POLICIES)
    vflip: bool = False                #: vertical flips (fine for orbital images, not for rover views)
    device_batches: bool = True        #: keep the data on the training device, augment batches there
    # models
    teacher_base: int = 64
    teacher_dropout: float = 0.1
    student_base: int = 16
    student_stem_stride: int = 1       #: 2: strided stem, U-Net at half resolution (faster on CPU)
    decoder_width: int = 64            #: the one default (CLI, demo, napari): 4.7 vs 18 GFLOPs/embedding at 128
    decoder_out_size: int = 256        #: decoder logits resolution in SAM's 1024 frame during training
    decoder_cpu_bf16: bool = True      #: train the domain decoder in bf16 autocast on a CPU with native
                                       #: bf16 instructions (AVX512-BF16/AMX; float32 elsewhere)
    train_cpu_bf16: bool = False       #: the same for teacher and student training on a CPU (2.1x for the
                                       #: paper-size teacher on the dev machine); off by default: the
                                       #: profiles' numbers were measured in float32. Validation stays float32
    # optimisation
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    loss: str = "ce"                   #: "ce", "focal" or "ce+dice"
    focal_gamma: float = 2.0
    dice_weight: float = 1.0           #: weight of the Dice term of "ce+dice"
    class_weights: bool = True         #: weight classes (class_weighting) from the training labels
    class_weighting: str = "inverse"   #: none | inverse | sqrt | median (distill.losses.class_weights)
    ema: float = 0.0                   #: decay of an exponential moving average of the weights (0: off);
                                       #: validated and saved instead of the raw weights when on
    early_stopping: int = 10           #: epochs without val mIoU gain before stopping (0: never)
    seed: int = 0
    device: str = "auto"
    amp: bool = True                   #: mixed precision (GPU only)
    channels_last: bool = True         #: GPU only
    num_workers: int = 0
    threads: int | None = None         #: torch CPU threads (None: PyTorch's default)
    resume: bool = True                #: continue from out_dir/resume.safetensors if present
    max_minutes: float | None = None   #: wall-clock budget; training ends early (and says so) past it
    fit_epochs_to_budget: bool = False #: with max_minutes: after the first epoch, plan only the epochs
                                       #: that fit the budget (the cosine schedule then ends on time)
    # distillation
    alpha: float = 0.5                 #: weight of CE on labels; 1 - alpha goes to KL
    temperature: float = 2.0
    distill: bool = True               #: False trains the student on labels alone
    distill_from: str = "teacher"      #: "teacher", "decoder" or "average"
    teacher_once: bool = False         #: run the teacher once per (unaugmented) image before training
                                       #: and warp its logits with each augmentation, instead of
                                       #: running it on every batch (the decoder teacher always is)
    kd_pixels: str = "labelled"        #: where the KL term applies: "labelled" or "all" image pixels
    cwd: float = 0.0                   #: weight of channel-wise distillation (Shu et al. 2021); 0: off
    teacher_checkpoint: str | None = None
    decoder_checkpoint: str | None = None
    # SAM (decoder training and decoder-as-teacher)
    sam_model_type: str = "vit_b"
    sam_checkpoint: str | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        if self.size < 16 or self.size % 16:
            raise MarsamError(f"size must be a multiple of 16 and at least 16, got {self.size}")
        if self.channels not in (1, 3):
            raise MarsamError(f"channels must be 1 or 3, got {self.channels}")
        if self.epochs < 1 or self.batch_size < 1:
            raise MarsamError("epochs and batch_size must be at least 1")
        from .batches import AUGMENT_POLICIES
        from .losses import LOSSES, WEIGHTINGS
        if self.loss not in LOSSES:
            raise MarsamError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.class_weighting not in WEIGHTINGS:
            raise MarsamError(f"unknown class_weighting {self.class_weighting!r}; choose one of "
                              f"{', '.join(WEIGHTINGS)}")
        if self.augment_policy not in AUGMENT_POLICIES:
            raise MarsamError(f"unknown augment_policy {self.augment_policy!r}; choose one of "
                              f"{', '.join(AUGMENT_POLICIES)}")
        if self.kd_pixels not in ("labelled", "all"):
            raise MarsamError(f"kd_pixels must be 'labelled' or 'all', got {self.kd_pixels!r}")
        if not 0.0 <= self.ema < 1.0:
            raise MarsamError(f"ema must be in [0, 1) (0 turns it off; 0.999 is typical), got {self.ema}")
        if self.student_stem_stride not in (1, 2):
            raise MarsamError(f"student_stem_stride must be 1 or 2, got {self.student_stem_stride}")
        if not 0.0 <= self.alpha <= 1.0:
            raise MarsamError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise MarsamError(f"temperature must be positive, got {self.temperature}")
        if self.distill_from not in ("teacher", "decoder", "average"):
            raise MarsamError(f"distill_from must be teacher, decoder or average, got {self.distill_from!r}")
        if self.lr <= 0:
            raise MarsamError(f"lr must be positive, got {self.lr}")
        return self


_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _coerce(key: str, value: Any) -> Any:
    """Turn a YAML or command-line value into the field's declared type.

    YAML 1.1 reads ``3e-4`` as a string and ``1`` as an int, so values are converted by the
    field's annotation rather than trusted as parsed.
    """
    kind = str(_FIELDS[key].type).replace(" ", "")
    optional = kind.endswith("|None")
    base = kind.split("|")[0]
    if isinstance(value, str) and base != "str":
        value = yaml.safe_load(value) if value.strip() else None
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none") and optional):
        if optional:
            return None
        raise MarsamError(f"setting {key} cannot be empty")
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            raise ValueError
        if base == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base == "str":
            return str(value)
    except (TypeError, ValueError):
        raise MarsamError(f"setting {key} must be {kind.replace('|', ' or ')}, got {value!r}") from None
    return value


def parse_overrides(items: Iterable[str] | dict | None) -> dict:
    if not items:
        return {}
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items:
        if "=" not in item:
            raise MarsamError(f"override {item!r} is not key=value; write e.g. --set epochs=5")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def load_config(profile_or_yaml: str | os.PathLike | None = "cpu",
                overrides: Iterable[str] | dict | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a profile name or YAML path, then ``overrides`` on top."""
    values: dict = {}
    if profile_or_yaml not in (None, ""):
        src = str(profile_or_yaml)
        path = CONFIG_DIR / f"{src}.yaml" if src in PROFILES else Path(src)
        if not path.is_file():
            raise MarsamError(f"config {src!r} is neither a profile ({', '.join(PROFILES)}) nor an "
                              "existing YAML file; check the path")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise MarsamError(f"config {path} is not valid YAML: {e}") from None
        if not isinstance(values, dict):
            raise MarsamError(f"config {path} must be a mapping of settings, not {type(values).__name__}")
    values.update(parse_overrides(overrides))
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise MarsamError(f"unknown setting(s) {', '.join(unknown)}; valid settings are "
                          f"{', '.join(sorted(_FIELDS))}")
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()}).validate()


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    from segmodels.atomic import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
