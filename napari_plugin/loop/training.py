"""Training the human-in-the-loop model on the session's labelled images: distill's API, nothing else.

The domain decoder (Julka and Granitzer) is what makes the loop fast: SAM's encoder is frozen and
its embeddings of the labelled images are in annotate's cache already (the annotator computed
them), so ``distill.train_decoder`` only trains the small decoder, 100 epochs on 5 images in the
paper's setting. The run's checkpoints go into the session folder (``models/decoder-<time>/``),
next to the labels they came from.

The settings start from distill's defaults (the decoder's width and loss resolution are the
ones the CLI and the demo use). The training sets torch's threads for its own duration only
(``segmodels.device.default_threads``: all cores unless ``MARSAM_GUI_THREADS`` says otherwise) and gives the
previous setting back, so later model calls in napari are not slowed.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

from segmodels.errors import MarsamError

from ..predict.jobs import Job

DECODER_EPOCHS = 100          # the paper's setting
STUDENT_EPOCHS = 20
SHIPPED_STUDENT = "pretrained:ai4mars-student"


def _labelled(session, advice: str) -> list:
    """The open session's labelled images, or one line saying what to do first."""
    if session is None:
        raise MarsamError("no session is open; label some images in the annotator first")
    labelled = session.labelled_images()
    if not labelled:
        raise MarsamError(f"the session has no labelled images yet; {advice}")
    return labelled

def run_dir(session_folder: Path, kind: str = "decoder") -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(session_folder) / "models" / f"{kind}-{stamp}"
    i = 1
    while out.exists():
        out = out.with_name(f"{kind}-{stamp}-{i}")
        i += 1
    return out


def decoder_config(epochs: int = DECODER_EPOCHS, data: str = "", batch_size: int = 4, lr: float = 1e-3,
                   device: str = "auto", **settings):
    """distill's TrainConfig for a session decoder: all labelled images train, no validation split
    (the last epoch is kept), no early stopping, no resumption (each run has a fresh folder).
    ``settings``: any other TrainConfig field (e.g. ``decoder_width``, ``threads``; ``width`` and
    ``out_size`` are short for ``decoder_width`` and ``decoder_out_size``)."""
    from distill import load_config
    for short, name in (("width", "decoder_width"), ("out_size", "decoder_out_size")):
        if short in settings:
            settings[name] = settings.pop(short)
    return load_config(None, {"data": data, "val_split": None, "epochs": int(epochs), "batch_size": int(batch_size),
                              "lr": float(lr), "early_stopping": 0, "resume": False, "device": device,
                              "warmup_epochs": 1.0, **settings})


def train_session_decoder(session, sam_model, cache=None, epochs: int = DECODER_EPOCHS, job: Job | None = None,
                          out_dir: Path | None = None, **settings):
    """Train a domain decoder on ``session``'s labelled images; returns distill's TrainResult."""
    from distill import open_dataset, train_decoder

    if sam_model is None:
        raise MarsamError("the domain decoder learns from SAM embeddings: load a SAM model (vit_b, vit_l or "
                          "vit_h) in the annotator first")
    labelled = _labelled(session, "label a few images (five are enough to start)")
    job = job or Job("training")
    job.update(0, epochs, f"reading {len(labelled)} labelled images")
    data = open_dataset(Path(session.folder), "all", size=None, channels=3, mixed_sizes=True)
    job.check()
    config = decoder_config(epochs, data=str(session.folder), **settings)
    out = out_dir or run_dir(Path(session.folder))
    job.message = f"SAM embeddings of {len(data)} images"
    # no curves plot: matplotlib would hold the GIL (a GUI stall) while it renders; the CSV is written
    return train_decoder(config, out, sam_model, progress=job.training_progress, should_stop=job.should_stop,
                         train_data=data, cache=cache, plot=False)


def student_config(epochs: int = STUDENT_EPOCHS, data: str = "", size: int = 128, batch_size: int = 8,
                   lr: float | None = None, device: str = "auto", **settings):
    """distill's TrainConfig for fine-tuning the shipped student on a session: labels only, all labelled
    images train (no validation split), at the shipped model's 128 px, with the fine-tuning learning
    rate (a tenth of the cpu profile's) unless ``lr`` is given."""
    from distill import load_config
    from distill.init_weights import FINE_TUNE_LR_FACTOR
    if lr is None:
        lr = load_config("cpu").lr * FINE_TUNE_LR_FACTOR
    return load_config(None, {"data": data, "val_split": None, "epochs": int(epochs), "batch_size": int(batch_size),
                              "size": int(size), "channels": 1, "lr": float(lr), "distill": False,
                              "early_stopping": 0, "resume": False, "device": device, "warmup_epochs": 0.5,
                              **settings})


def train_session_student(session, epochs: int = STUDENT_EPOCHS, job: Job | None = None, out_dir: Path | None = None,
                          init: str = SHIPPED_STUDENT, **settings):
    """Fine-tune the shipped student (or ``init``) on ``session``'s labelled images, no SAM needed; a
    session with other classes than AI4Mars gets a new head (``distill.init_weights``)."""
    from distill import open_dataset, train_student

    labelled = _labelled(session, "label a few images first")
    job = job or Job("training")
    job.update(0, epochs, f"reading {len(labelled)} labelled images")
    config = student_config(epochs, data=str(session.folder), **settings)
    data = open_dataset(Path(session.folder), "train", size=config.size, channels=1, augment=True, seed=config.seed)
    job.check()
    out = out_dir or run_dir(Path(session.folder), "student")
    job.message = f"fine-tuning on {len(data)} images"
    return train_student(config, out, progress=job.training_progress, should_stop=job.should_stop,
                         train_data=data, init=init)
