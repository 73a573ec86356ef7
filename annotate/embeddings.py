"""SAM image embeddings: computed once, kept in an on-disk cache, tiled for large images.

Embedding is the slow step of SAM (seconds on a CPU for vit_b); decoding a box is milliseconds.
So an embedding is computed once per (image content, model type, checkpoint) and stored; the
napari plugin, ``marsam annotate`` and ``marsam embed`` all share the cache.

Cache key: SHA-256 of the image array (bytes + shape + dtype), the model type, the checkpoint
digest and the tiling parameters. The file name, path or modification time play no part, so a
renamed image still hits and an edited one never reuses a stale embedding. Entries are
safetensors files written atomically; their metadata holds the sizes needed to map prompts
back (input size, original size and offset of every tile) and a SHA-256 of the tensor bytes. An
entry that fails to load or to match its checksum is deleted and recomputed. Embeddings are
stored in float16: half the disk of float32 and well below SAM's own numerical noise (GPU
embeddings are computed in mixed precision anyway); a fresh embedding is returned through the
same rounding, so a cache hit gives exactly what the first computation gave.

Tiling: SAM sees 1024 px. An image with both sides <= 1024 is one tile (SAM resizes it as
usual). A larger image is cut into 1024 px tiles overlapping by ``TILE_OVERLAP`` px (the last
tile of a row or column is aligned to the image edge), each embedded at full resolution, so
nothing is shrunk beyond recognition. See :meth:`ImageEmbedding.tile_for_box` for which tile
answers a prompt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from segmodels.atomic import atomic_path
from segmodels.device import autocast
from segmodels.images import check_image, to_rgb_uint8

from .sam_loading import SamModel, cache_root

log = logging.getLogger(__name__)

TILE_SIZE = 1024
TILE_OVERLAP = 256
STORE_DTYPE = torch.float16
_FORMAT = 1


@dataclass
class EmbeddingTile:
    """One SAM embedding and where it sits: ``offset`` (x, y) of the tile in the image."""
    embedding: torch.Tensor            # 1 x 256 x 64 x 64, float32, CPU
    input_size: tuple[int, int]        # (h, w) of the resized tile inside SAM's 1024 frame
    original_size: tuple[int, int]     # (h, w) of the tile in image pixels
    offset: tuple[int, int]            # (x, y) of the tile's top-left corner in the image

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        x, y = self.offset
        return x, y, x + self.original_size[1], y + self.original_size[0]


@dataclass
class ImageEmbedding:
    tiles: list[EmbeddingTile]
    image_size: tuple[int, int]        # (h, w) of the whole image
    model_type: str
    checkpoint_id: str
    key: str

    def tile_for_box(self, box: Sequence[float]) -> int:
        """Index of the tile that answers ``box`` (x0, y0, x1, y1 in image pixels).

        Rule: among the tiles that contain the box entirely, the one whose centre is nearest
        the box centre (the most context on every side). If no tile contains it (a box larger
        than the overlap straddling a seam), the tile with the largest overlap with the box;
        the box is then clipped to that tile and its mask pasted back there, so the part of a
        very large box outside that tile stays unlabelled rather than guessed.
        """
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        best, best_score = 0, None
        for i, t in enumerate(self.tiles):
            tx0, ty0, tx1, ty1 = t.bounds
            inside = tx0 <= x0 and ty0 <= y0 and x1 <= tx1 and y1 <= ty1
            inter = max(0.0, min(x1, tx1) - max(x0, tx0)) * max(0.0, min(y1, ty1) - max(y0, ty0))
            dist = ((tx0 + tx1) / 2 - cx) ** 2 + ((ty0 + ty1) / 2 - cy) ** 2
            score = (inside, inter if not inside else 0.0, -dist)
            if best_score is None or score > best_score:
                best, best_score = i, score
        return best


def tile_starts(length: int, tile: int = TILE_SIZE, overlap: int = TILE_OVERLAP) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def tile_grid(height: int, width: int, tile: int = TILE_SIZE, overlap: int = TILE_OVERLAP
              ) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of every tile, row by row."""
    return [(x, y, min(tile, width), min(tile, height))
            for y in tile_starts(height, tile, overlap) for x in tile_starts(width, tile, overlap)]


def image_key(image: np.ndarray, model_type: str, checkpoint_id: str) -> str:
    arr = np.ascontiguousarray(image)
    h = hashlib.sha256()
    h.update(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(memoryview(arr).cast("B"))  # the bytes in place: no copy of a large image
    h.update(f"|{model_type}|{checkpoint_id}|tile{TILE_SIZE}-{TILE_OVERLAP}|v{_FORMAT}".encode())
    return h.hexdigest()


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """Folder of ``<key[:2]>/<key>.safetensors`` entries; safe to share between processes."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else cache_root() / "embeddings"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> ImageEmbedding | None:
        """The cached embedding, or None when absent or corrupt (a corrupt entry is removed)."""
        from safetensors import safe_open
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads(f.metadata()["marsam"])
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            if meta.get("key") != key or _tensor_digest(tensors) != meta["sha256"]:
                raise ValueError("checksum mismatch")
            tiles = [EmbeddingTile(embedding=tensors[f"tile{i}"].float(), input_size=tuple(t["input_size"]),
                                   original_size=tuple(t["original_size"]), offset=tuple(t["offset"]))
                     for i, t in enumerate(meta["tiles"])]
            return ImageEmbedding(tiles=tiles, image_size=tuple(meta["image_size"]), model_type=meta["model_type"],
                                  checkpoint_id=meta["checkpoint_id"], key=key)
        except Exception as e:  # truncated, overwritten, wrong format: recompute
            log.warning("embedding cache entry %s is corrupt (%s); recomputing it", path.name, e)
            try:
                path.unlink()
            except OSError:
                pass
            return None

    def put(self, emb: ImageEmbedding) -> Path:
        from safetensors.torch import save_file
        tensors = {f"tile{i}": t.embedding.detach().to("cpu", STORE_DTYPE).contiguous()
                   for i, t in enumerate(emb.tiles)}
        meta = {"key": emb.key, "format": _FORMAT, "image_size": list(emb.image_size),
                "model_type": emb.model_type, "checkpoint_id": emb.checkpoint_id,
                "tiles": [{"input_size": list(t.input_size), "original_size": list(t.original_size),
                           "offset": list(t.offset)} for t in emb.tiles],
                "sha256": _tensor_digest(tensors)}
        path = self.path(emb.key)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"marsam": json.dumps(meta)})
        return path


def _prepare_tile(model: SamModel, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize a tile's longest side to 1024 and normalise/pad it as SamPredictor.set_image does."""
    from segment_anything.utils.transforms import ResizeLongestSide
    transform = ResizeLongestSide(model.sam.image_encoder.img_size)
    resized = transform.apply_image(rgb)
    x = torch.as_tensor(resized, device=model.device).permute(2, 0, 1).contiguous()
    return model.sam.preprocess(x.float()), tuple(resized.shape[:2])


@torch.no_grad()
def _encode(model: SamModel, batch: list[torch.Tensor], mixed_precision: bool, as_float: bool = True) -> torch.Tensor:
    with autocast(model.device, enabled=mixed_precision):
        out = model.sam.image_encoder(torch.stack(batch))
    # Round through the storage dtype so a fresh result equals a later cache hit exactly.
    out = out.to(STORE_DTYPE).cpu()
    return out.float() if as_float else out


def _tile_rgb(image: np.ndarray, full_rgb: np.ndarray | None, x: int, y: int, tw: int, th: int) -> np.ndarray:
    """RGB uint8 pixels of one tile; an 8-bit image is converted per tile (no full RGB copy)."""
    if full_rgb is not None:
        return np.ascontiguousarray(full_rgb[y:y + th, x:x + tw])
    return to_rgb_uint8(image[y:y + th, x:x + tw])


def embed_images(model: SamModel, images: Sequence[np.ndarray], cache: EmbeddingCache | None = None,
                 batch_size: int = 4, mixed_precision: bool = True, keep: bool = True) -> list[ImageEmbedding | None]:
    """Embeddings of several images; cached ones are read, the rest encoded ``batch_size`` tiles at a time.

    Tiles are streamed: each is cut and prepared just before its encoder call, so memory holds
    the images, ``batch_size`` prepared tiles (12 MiB each) and the finished embeddings (2 MiB
    per tile in float16 until an image is complete), never all tiles of a large image prepared
    at once. ``keep=False`` (filling the cache only) drops each embedding once stored and
    returns None for it. Mixed precision applies on CUDA only (see segmodels.device.autocast);
    on CPU this is fp32.
    """
    batch_size = max(1, int(batch_size))
    results: list[ImageEmbedding | None] = [None] * len(images)
    partial: dict[int, ImageEmbedding] = {}
    remaining: dict[int, int] = {}

    def finish(i: int) -> None:
        emb = partial.pop(i)
        if cache is not None:
            cache.put(emb)
        if keep:
            for t in emb.tiles:
                t.embedding = t.embedding.float()
            results[i] = emb

    def pending():
        for i, image in enumerate(images):
            key = image_key(image, model.model_type, model.checkpoint_id)
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                results[i] = hit if keep else None
                continue
            arr = check_image(image)
            full_rgb = None if arr.dtype == np.uint8 else to_rgb_uint8(arr)
            h, w = arr.shape[:2]
            grid = tile_grid(h, w)
            partial[i] = ImageEmbedding(tiles=[EmbeddingTile(embedding=None, input_size=(0, 0), original_size=(th, tw),
                                                             offset=(x, y)) for x, y, tw, th in grid],
                                        image_size=(h, w), model_type=model.model_type,
                                        checkpoint_id=model.checkpoint_id, key=key)
            remaining[i] = len(grid)
            for j, (x, y, tw, th) in enumerate(grid):
                yield i, j, _tile_rgb(arr, full_rgb, x, y, tw, th)

    def encode(chunk) -> None:
        prepared = [_prepare_tile(model, rgb) for _, _, rgb in chunk]
        out = _encode(model, [p for p, _ in prepared], mixed_precision, as_float=False)
        for (i, j, _), (_, input_size), emb in zip(chunk, prepared, out):
            tile = partial[i].tiles[j]
            tile.embedding, tile.input_size = emb[None].clone(), input_size
            remaining[i] -= 1
            if remaining[i] == 0:
                finish(i)

    chunk = []
    for item in pending():
        chunk.append(item)
        if len(chunk) == batch_size:
            encode(chunk)
            chunk = []
    if chunk:
        encode(chunk)
    return results


def embed_image(model: SamModel, image: np.ndarray, cache: EmbeddingCache | None = None) -> ImageEmbedding:
    """The (possibly tiled) SAM embedding of one image, from the cache when it is there."""
    return embed_images(model, [image], cache)[0]
