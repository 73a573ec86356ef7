"""How big a demo run is: one dataclass, two profiles sized for their machines.

The cpu profile is sized so the whole demo (data, annotation, teacher, student, label-efficiency
curve, evaluation, explanations, report) ends within 10 minutes on 2 CPU cores: 96 px tiles, a
base-32 Attention U-Net teacher (3.4M parameters) and a base-8 U-Net student (0.27M), so the
student is as much smaller and faster than its teacher as in the paper. The gpu profile trains
at the paper's 256 px with its base-64 teacher and base-16 student. Tests shrink every knob.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from segmodels.errors import MarsamError

PROFILES = ("cpu", "gpu")


@dataclass
class DemoSettings:
    profile: str = "cpu"              #: distill training profile the run starts from (cpu / gpu)
    size: int = 96                    #: image side in pixels (multiple of 16)
    n_train: int = 32                 #: images the simulated expert annotates (training set)
    n_val: int = 12                   #: ground-truth images every model is scored on
    teacher_base: int = 32             #: the teacher must be the larger model, or distillation is moot
    student_base: int = 8
    teacher_epochs: int = 8
    student_epochs: int = 8
    decoder_epochs: int = 20
    label_efficiency_ns: tuple[int, ...] = (4, 8, 16)
    label_efficiency_epochs: int = 6
    batch_size: int = 4
    lr: float = 3e-3
    jitter: float = 0.05              #: expert box edges off by this fraction of the box side
    clicks: bool = True               #: the expert adds one click inside, negative clicks on neighbours
    explain_images: int = 3           #: validation images shown with Grad-CAM and uncertainty
    grid_images: int = 4              #: validation images in the prediction grid
    threads: int | None = 2           #: torch CPU threads (None: PyTorch's default)
    speed_rounds: int = 5             #: teacher/student speed: interleaved rounds (median of the ratios)
    speed_seconds: float = 0.5        #: timing window per model per round
    device: str = "auto"
    seed: int = 0

    @classmethod
    def for_profile(cls, profile: str = "cpu", **overrides) -> "DemoSettings":
        if profile not in PROFILES:
            raise MarsamError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
        base = {"cpu": {},
                "gpu": dict(size=256, n_train=400, n_val=100, teacher_base=64, student_base=16, teacher_epochs=40,
                            student_epochs=40, decoder_epochs=100, label_efficiency_ns=(5, 10, 15, 20, 25, 50),
                            label_efficiency_epochs=40, batch_size=16, lr=1e-3, threads=None,
                            explain_images=4, grid_images=6)}[profile]
        return cls(profile=profile, **{**base, **overrides}).validate()

    def validate(self) -> "DemoSettings":
        if self.size < 32 or self.size % 16:
            raise MarsamError(f"demo size must be a multiple of 16 and at least 32, not {self.size}")
        if self.n_train < 2 or self.n_val < 1:
            raise MarsamError("the demo needs at least 2 training and 1 validation image")
        if min(self.teacher_epochs, self.student_epochs, self.decoder_epochs, self.label_efficiency_epochs) < 1:
            raise MarsamError("every epoch count of the demo must be at least 1")
        self.label_efficiency_ns = tuple(sorted({int(n) for n in self.label_efficiency_ns if 0 < int(n) <= self.n_train}))
        return self

    def train_config(self, data: str, **overrides):
        """distill's TrainConfig for one of the demo's training runs on ``data``."""
        from distill.config import load_config
        values = dict(data=data, size=self.size, channels=1, epochs=self.teacher_epochs, batch_size=self.batch_size,
                      lr=self.lr, teacher_base=self.teacher_base, student_base=self.student_base,
                      threads=self.threads, device=self.device, seed=self.seed, early_stopping=0, resume=False,
                      augment=True, warmup_epochs=0.5, limit=None, val_limit=None)
        values.update(overrides)
        return load_config(self.profile, values)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["label_efficiency_ns"] = list(self.label_efficiency_ns)
        return d
