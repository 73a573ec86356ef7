"""Prompt engines: boxes (with classes and refining points) in, one mask per box out.

Two engines share one interface (:class:`PromptEngine`): :class:`SamEngine` decodes every box of
an image in one batch on a cached SAM embedding; :class:`~annotate.grabcut.GrabCutEngine` needs
no weights. :func:`merge_masks` turns the masks into one label map by a fixed overlap rule.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Protocol, Sequence

import numpy as np
import torch

from segmodels.errors import MarsamError, WeightsUnavailable
from segmodels.labels import IGNORE_INDEX

from .embeddings import EmbeddingCache, ImageEmbedding, embed_image
from .grabcut import GrabCutEngine
from .masks import CropMask
from .prompts import BoxPrompt, clip_box
from .sam_loading import SamModel, load_sam

log = logging.getLogger(__name__)

__all__ = ["BoxPrompt", "PromptEngine", "SamEngine", "GrabCutEngine", "make_engine", "merge_masks", "label_image",
           "CropMask", "segment_windows"]

ENGINES = ("sam", "grabcut")


class PromptEngine(Protocol):
    name: str

    def set_image(self, image: np.ndarray) -> None: ...

    def segment(self, prompts: list[BoxPrompt]) -> list[np.ndarray]: ...


class SamEngine:
    """SAM box prompting on a cached (possibly tiled) embedding.

    ``multimask``: "best" asks SAM for its 3 candidate masks and keeps the one with the highest
    predicted IoU (SAM's own advice for ambiguous prompts); "single" asks for SAM's single-mask
    output; 0, 1 or 2 keeps that candidate. Prompts are decoded in batches of ``chunk`` (all
    boxes of a typical image in one call); prompts with points are batched with prompts of the
    same point count, so no padding token changes any result.

    ``clip_to_box`` (default on) keeps each mask inside its box: the expert's box bounds the
    object, and SAM occasionally leaks into similar-looking terrain beyond it.
    """
    name = "sam"

    def __init__(self, model: SamModel, cache: EmbeddingCache | None = None, multimask: str | int = "best",
                 chunk: int = 64, clip_to_box: bool = True):
        if multimask not in ("best", "single", 0, 1, 2):
            raise MarsamError(f"multimask must be 'best', 'single' or 0..2, not {multimask!r}")
        from segment_anything.utils.transforms import ResizeLongestSide
        self.model = model
        self.cache = cache
        self.multimask = multimask
        self.chunk = max(1, int(chunk))
        self.clip_to_box = clip_to_box
        self.transform = ResizeLongestSide(model.sam.image_encoder.img_size)
        self.embedding: ImageEmbedding | None = None

    @property
    def model_name(self) -> str:
        return f"{self.model.model_type}:{self.model.checkpoint_id[:12]}"

    def set_image(self, image: np.ndarray) -> None:
        self.embedding = embed_image(self.model, image, self.cache)

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Use an embedding computed elsewhere (e.g. in a napari worker thread)."""
        self.embedding = embedding

    def segment(self, prompts: list[BoxPrompt]) -> list[np.ndarray]:
        return [c.full() for c in self.segment_crops(prompts)]

    def segment_crops(self, prompts: list[BoxPrompt]) -> list[CropMask]:
        """One window per prompt: its box when ``clip_to_box``, else its tile (bounded memory)."""
        if self.embedding is None:
            raise MarsamError("no image set; call set_image(image) before segment(prompts)")
        emb = self.embedding
        h, w = emb.image_size
        out = [CropMask(np.zeros((0, 0), bool), 0, 0, (h, w)) for _ in prompts]
        groups: dict[tuple[int, int], list[tuple[int, tuple]]] = defaultdict(list)
        for i, p in enumerate(prompts):
            try:
                box, _ = clip_box(p.box, (h, w))
            except MarsamError as e:
                log.warning("box %d rejected: %s", i, e)
                continue
            groups[(emb.tile_for_box(box), p.num_points)].append((i, box))
        for (t, _), items in groups.items():
            tile = emb.tiles[t]
            ox, oy = tile.offset
            th, tw = tile.original_size
            for s in range(0, len(items), self.chunk):
                part = items[s:s + self.chunk]
                masks = self._decode(tile, [prompts[i] for i, _ in part], [b for _, b in part])
                for (i, box), m in zip(part, masks):
                    if self.clip_to_box:  # the box's window of the tile's mask (nothing outside the box)
                        x0, y0 = max(int(box[0]), ox), max(int(box[1]), oy)
                        x1, y1 = min(int(np.ceil(box[2])), ox + tw), min(int(np.ceil(box[3])), oy + th)
                        out[i] = CropMask(np.ascontiguousarray(m[y0 - oy:y1 - oy, x0 - ox:x1 - ox]), x0, y0, (h, w))
                    else:
                        out[i] = CropMask(m, ox, oy, (h, w))
        return out

    @torch.inference_mode()
    def _decode(self, tile, prompts: list[BoxPrompt], boxes: list[tuple]) -> np.ndarray:
        sam, dev = self.model.sam, self.model.device
        ox, oy = tile.offset
        th, tw = tile.original_size
        b = torch.tensor(boxes, dtype=torch.float32, device=dev) - torch.tensor([ox, oy, ox, oy], device=dev)
        b[:, 0::2] = b[:, 0::2].clamp(0, tw)
        b[:, 1::2] = b[:, 1::2].clamp(0, th)
        b = self.transform.apply_boxes_torch(b, tile.original_size)
        points = None
        if prompts[0].num_points:
            coords = torch.tensor([p.positive_points + p.negative_points for p in prompts],
                                  dtype=torch.float32, device=dev) - torch.tensor([ox, oy], device=dev)
            labels = torch.tensor([[1] * len(p.positive_points) + [0] * len(p.negative_points) for p in prompts],
                                  dtype=torch.int, device=dev)
            points = (self.transform.apply_coords_torch(coords, tile.original_size), labels)
        sparse, dense = sam.prompt_encoder(points=points, boxes=b, masks=None)
        multi = self.multimask != "single"
        low, iou = sam.mask_decoder(image_embeddings=tile.embedding.to(dev), image_pe=sam.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=multi)
        if self.multimask == "best":
            idx = iou.argmax(dim=1)
        else:
            idx = torch.full((low.shape[0],), 0 if self.multimask == "single" else int(self.multimask),
                             dtype=torch.long, device=low.device)
        chosen = low[torch.arange(low.shape[0], device=low.device), idx][:, None]
        # Upscale only the chosen mask: B x 1 x H x W instead of predict_torch's B x 3 x H x W.
        masks = sam.postprocess_masks(chosen, tile.input_size, tile.original_size)
        return (masks[:, 0] > sam.mask_threshold).cpu().numpy()


def make_engine(engine: str = "sam", model_type: str = "vit_b", checkpoint=None, device=None,
                cache: EmbeddingCache | None = None) -> PromptEngine:
    """The engine asked for; "sam" with no checkpoint findable falls back to GrabCut, with a warning.

    A checkpoint that was named but is missing or of another model type stays an error: the
    user asked for specific weights and should hear why they cannot be used.
    """
    if engine == "grabcut":
        return GrabCutEngine()
    if engine != "sam":
        raise MarsamError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if checkpoint is not None:
        return SamEngine(load_sam(model_type, checkpoint, device), cache=cache)
    try:
        return SamEngine(load_sam(model_type, None, device), cache=cache)
    except WeightsUnavailable as e:
        log.warning("no SAM checkpoint available (%s); using the GrabCut engine instead, which needs no weights", e)
        fallback = GrabCutEngine()
        fallback.fallback_reason = str(e)
        return fallback


def merge_masks(masks: Sequence[np.ndarray | CropMask], class_ids: Sequence[int], shape: tuple[int, int],
                ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """One uint8 label map from per-box masks (full arrays or :class:`CropMask` windows); pixels no
    mask covers stay ``ignore_index``.

    Overlap rule: smaller masks win. Masks are painted from the largest area to the smallest, so
    an expert's small rock box inside a big soil box keeps the rock. Between masks of equal area
    the later prompt wins (it is the more recent correction).
    """
    if len(masks) != len(class_ids):
        raise MarsamError(f"{len(masks)} masks but {len(class_ids)} class ids; give one class per mask")
    out = np.full(tuple(shape[:2]), ignore_index, np.uint8)
    areas = [m.area if isinstance(m, CropMask) else int(np.count_nonzero(m)) for m in masks]
    for i in sorted(range(len(masks)), key=lambda k: (-areas[k], k)):
        m = masks[i]
        if isinstance(m, CropMask):
            if tuple(m.image_shape[:2]) != out.shape:
                raise MarsamError(f"mask {i} is for an image of shape {m.image_shape}, the label map {out.shape}")
            out[m.window][m.mask] = int(class_ids[i])
            continue
        m = np.asarray(m, bool)
        if m.shape != out.shape:
            raise MarsamError(f"mask {i} has shape {m.shape}, the label map {out.shape}; masks must match the image")
        out[m] = int(class_ids[i])
    return out


def segment_windows(engine: PromptEngine, prompts: list[BoxPrompt]) -> list[np.ndarray | CropMask]:
    """The engine's masks as windows when it can give them (bounded memory), else full masks."""
    windows = getattr(engine, "segment_crops", None)
    return windows(prompts) if windows is not None else engine.segment(prompts)


def label_image(engine: PromptEngine, image: np.ndarray, prompts: list[BoxPrompt],
                ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Set the image, decode every prompt, merge: the label map for one image (all
    ``ignore_index`` when there is no prompt; the engine then does no work).

    Memory: the image, the label map (1 byte per pixel) and one window per box, never a full
    image-sized mask per box.
    """
    shape = np.asarray(image).shape[:2]
    if not prompts:
        return np.full(shape, ignore_index, np.uint8)
    engine.set_image(image)
    masks = segment_windows(engine, prompts)
    return merge_masks(masks, [p.class_id for p in prompts], shape, ignore_index)
