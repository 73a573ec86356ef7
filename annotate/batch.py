"""Batch work behind ``marsam annotate`` and ``marsam embed``, as plain functions.

Both go on past a bad image: it is reported (and, in a session, marked "failed" with the
reason) and the next image is processed. Annotation is resumable: images already "done" in
the session are skipped, and each finished image is saved at once, so an interrupted run loses
at most the image in progress.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from segmodels.errors import DiskFullError, MarsamError
from segmodels.images import load_image

from .embeddings import EmbeddingCache, embed_images, image_key
from .engines import PromptEngine, label_image
from .prompts import BoxPrompt
from .sam_loading import SamModel
from .session import Session

log = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    done: int = 0
    skipped: int = 0          # already done in the session (annotate) or cache hits (embed)
    no_boxes: int = 0
    boxes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"done": self.done, "skipped": self.skipped, "no_boxes": self.no_boxes, "boxes": self.boxes,
                "failed": [{"image": n, "error": e} for n, e in self.failed], "seconds": round(self.seconds, 2)}


def _progress(items, progress: bool, desc: str):
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="img", disable=not progress)


def annotate_session(session: Session, engine: PromptEngine, boxes: dict[Path, list[BoxPrompt]],
                     redo: bool = False, progress: bool = True, complete: bool | None = None) -> BatchSummary:
    """Label every session image that has boxes; ``boxes`` maps image paths to their prompts.

    ``complete``: whether the boxes mark every object, so the rest of each image is background.
    None: yes when the label spec has a ``background`` class (objects such as pits, the way
    box-annotated object datasets are meant), no for terrain specs.
    """
    if complete is None:
        complete = session.label_spec.background_id is not None
    t0 = time.perf_counter()
    s = BatchSummary()
    wanted = {Path(p).resolve(): b for p, b in boxes.items()}
    model_name = getattr(engine, "model_name", None)
    for path in _progress(session.image_paths, progress, f"annotate ({engine.name})"):
        prompts = wanted.get(path.resolve())
        if not prompts:
            s.no_boxes += 1
            continue
        if session.status(path) == "done" and not redo:
            s.skipped += 1
            continue
        try:
            image = load_image(path)
            label_map = label_image(engine, image, prompts)
            session.set_result(path, prompts, label_map, status="done", engine=engine.name, model=model_name,
                               complete=complete)
        except DiskFullError:
            raise  # every further write would fail too; what is saved stays intact
        except MarsamError as e:
            _fail(session, s, path, str(e))
            continue
        except Exception as e:  # one bad image never stops a batch
            log.exception("annotating %s failed", path)
            _fail(session, s, path, f"{type(e).__name__}: {e}")
            continue
        s.done += 1
        s.boxes += len(prompts)
    s.seconds = time.perf_counter() - t0
    return s


def _fail(session: Session, s: BatchSummary, path: Path, error: str) -> None:
    log.warning("skipping %s: %s", path.name, error)
    s.failed.append((path.name, error))
    session.mark_failed(path, error)


def shard(items: Sequence, rank: int | None = None, world_size: int | None = None) -> list:
    """This process's share: items[rank::world_size], from torchrun's RANK / WORLD_SIZE by default."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise MarsamError(f"rank {rank} is outside world size {world_size}; check RANK and WORLD_SIZE")
    return list(items)[rank::world_size]


def default_embed_batch(model: SamModel) -> int:
    """Tiles per encoder call: 4 on a GPU; 1 on a CPU, where a batch buys little speed and each
    tile's global attention costs about 1.6 GB (vit_b) during the call."""
    return 1 if str(model.device).startswith("cpu") else 4


def embed_paths(model: SamModel, paths: Sequence[Path], cache: EmbeddingCache, batch_size: int | None = None,
                progress: bool = True) -> BatchSummary:
    """Fill the embedding cache for ``paths``, ``batch_size`` images (their tiles streamed) per encoder call."""
    from tqdm import tqdm
    t0 = time.perf_counter()
    s = BatchSummary()
    batch_size = max(1, int(batch_size if batch_size is not None else default_embed_batch(model)))
    with tqdm(total=len(paths), desc=f"embed ({model.model_type})", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            images, names, hits = [], [], 0
            for p in paths[start:start + batch_size]:
                try:
                    img = load_image(p)
                except MarsamError as e:
                    log.warning("skipping %s: %s", Path(p).name, e)
                    s.failed.append((Path(p).name, str(e)))
                    continue
                if image_key(img, model.model_type, model.checkpoint_id) in cache:
                    hits += 1
                names.append(Path(p).name)
                images.append(img)
            if images:
                try:
                    embed_images(model, images, cache, batch_size=batch_size, keep=False)
                    s.done += len(images) - hits
                    s.skipped += hits
                except Exception as e:  # e.g. out of memory on one huge image: report, go on
                    log.exception("embedding failed")
                    s.failed.extend((n, f"{type(e).__name__}: {e}") for n in names)
            bar.update(len(paths[start:start + batch_size]))
    s.seconds = time.perf_counter() - t0
    return s
