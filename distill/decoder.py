"""The SAM domain decoder (Julka and Granitzer), trained on cached SAM image embeddings.

SAM's image encoder is the expensive part (seconds per image on a CPU for vit_b) and it is
frozen, so every image is embedded once, before training, through annotate's embedding cache
(on disk, shared with the labelling tools: images labelled in a session are usually embedded
already). The epoch loop then only runs the small decoder on the 256 x 64 x 64 embeddings.

Targets live in SAM's frame: the label map is resized like SAM resizes the image (longest side
1024), padded to 1024 x 1024 with the ignore value (so SAM's padding is never learned) and
sampled at the decoder's training resolution ``decoder_out_size``. Images larger than 1024 px
are tiled by annotate; each tile is one training sample with its own crop of the label map.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from segmodels.errors import MarsamError
from segmodels.labels import LabelSpec
from segmodels.networks import build_model
from segmodels.networks.sam_decoder import SAM_EMBED_CHANNELS, SAM_INPUT_SIZE
from segmodels.normalization import SAM_EMBEDDING, Normalization

from .config import TrainConfig
from .data import SegmentationDataset, open_dataset
from .tasks import SupervisedTask
from .teacher import data_info
from .train_loop import ProgressFn, StopFn, TrainResult, fit, seed_everything


def _sam_frame_target(mask: np.ndarray, input_size: tuple[int, int], out_size: int,
                      ignore: int) -> np.ndarray:
    h, w = input_size
    resized = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    frame = np.full((SAM_INPUT_SIZE, SAM_INPUT_SIZE), ignore, np.uint8)
    frame[:h, :w] = resized
    if out_size != SAM_INPUT_SIZE:
        frame = cv2.resize(frame, (out_size, out_size), interpolation=cv2.INTER_NEAREST)
    return frame


class EmbeddingDataset(Dataset):
    """(SAM embedding, target in SAM's frame) per tile; everything precomputed and in memory."""

    def __init__(self, source: SegmentationDataset, sam_model, out_size: int = 256, cache=None,
                 progress: bool = False):
        from annotate.embeddings import EmbeddingCache, embed_image
        if cache is None:
            cache = EmbeddingCache()
        self.label_spec: LabelSpec = source.label_spec
        self.source, self.split, self.size = source.source, source.split, source.size
        self.skipped = list(source.skipped)
        self.x: list[torch.Tensor] = []
        self.y: list[torch.Tensor] = []
        self.ids: list[str] = []
        it = range(len(source))
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc="SAM embeddings", unit="img", leave=False)
        ignore = self.label_spec.ignore_index
        for i in it:
            try:
                emb = embed_image(sam_model, source.images[i], cache)
            except MarsamError as e:
                self.skipped.append((source.ids[i], f"cannot embed: {e}"))
                continue
            for t in emb.tiles:
                x0, y0, x1, y1 = t.bounds
                crop = source.masks[i][y0:y1, x0:x1]
                target = _sam_frame_target(crop, t.input_size, out_size, ignore)
                if not (target != ignore).any():
                    continue
                self.x.append(t.embedding[0].float())
                self.y.append(torch.from_numpy(target.astype(np.int64)))
                self.ids.append(f"{source.ids[i]}@{x0},{y0}" if len(emb.tiles) > 1 else source.ids[i])
        if not self.x:
            raise MarsamError(f"no labelled image could be embedded from {source.source}; "
                              "check the images and their label maps")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": i}

    def class_counts(self) -> np.ndarray:
        k = self.label_spec.num_classes
        counts = np.zeros(k, np.int64)
        for y in self.y:
            counts += np.bincount(y.numpy().ravel(), minlength=256)[:k]
        return counts

    @property
    def normalization(self) -> Normalization:
        # the decoder reads SAM embeddings; SAM normalises the image itself
        return Normalization(in_channels=SAM_EMBED_CHANNELS, input=SAM_EMBEDDING, mean=None, std=None)


def attach_decoder_soft_labels(dataset: SegmentationDataset, decoder, sam_model, config: TrainConfig,
                               progress: bool = False) -> None:
    """Compute the decoder's logits once per training image (at the dataset's size) and attach
    them as ``dataset.soft``; augmentations move them with the image. ``decoder``: the decoder's
    Predictor (or its module)."""
    from annotate.decoder_predictor import decoder_image_logits
    if not isinstance(decoder, torch.nn.Module):
        decoder = decoder.module
    if sam_model is None:
        raise MarsamError("distilling from the SAM decoder needs SAM's image encoder; pass sam_model "
                          "(CLI: --set sam_checkpoint=PATH)")
    soft = []
    it = range(len(dataset))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="decoder soft labels", unit="img", leave=False)
    for i in it:
        logits = decoder_image_logits(decoder, sam_model, dataset.images[i])[0]
        h, w = dataset.masks[i].shape
        if logits.shape[-2:] != (h, w):
            logits = torch.nn.functional.interpolate(logits[None], size=(h, w), mode="bilinear",
                                                     align_corners=False)[0]
        soft.append(logits.numpy().astype(np.float32))
    dataset.soft = soft


def train_decoder(config: TrainConfig, out_dir: str | os.PathLike, sam_model,
                  progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                  train_data: SegmentationDataset | None = None, val_data: SegmentationDataset | None = None,
                  cache=None, show_progress: bool = False, plot: bool = True) -> TrainResult:
    """Train the domain decoder on SAM embeddings of the training images (computed once, cached).

    ``plot=False``: no curves.png (matplotlib holds the GIL while it renders: napari passes it).

    ``train_data``/``val_data``: already opened datasets (e.g. a session's labelled images);
    otherwise ``config.data`` is opened at the images' own size (SAM does its own resizing).
    """
    if sam_model is None:
        raise MarsamError("training the domain decoder needs a SAM model (annotate.sam_loading.load_sam)")
    if train_data is None:
        train_data = open_dataset(config.data, config.train_split, None, 3, label_spec=config.labels,
                                  limit=config.limit, seed=config.seed, progress=show_progress,
                                  mixed_sizes=True)
    if val_data is None and config.val_split:
        val_data = open_dataset(config.data, config.val_split, None, 3, label_spec=train_data.label_spec,
                                limit=config.val_limit, seed=config.seed, progress=show_progress,
                                mixed_sizes=True)
    train = EmbeddingDataset(train_data, sam_model, config.decoder_out_size, cache, show_progress)
    val = (EmbeddingDataset(val_data, sam_model, config.decoder_out_size, cache, show_progress)
           if val_data is not None else None)
    seed_everything(config.seed)   # same seed -> same initial weights (e.g. distilled vs label-only)
    model = build_model("sam_decoder", num_classes=train.label_spec.num_classes, width=config.decoder_width,
                        out_size=config.decoder_out_size)
    info = data_info(train_data, val_data)
    info["sam"] = {"model_type": sam_model.model_type, "checkpoint_id": sam_model.checkpoint_id}
    info["loss_resolution"] = {"size": config.decoder_out_size, "frame": SAM_INPUT_SIZE,
                               "targets": "nearest-neighbour in SAM's padded frame"}
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    resuming = config.resume and (Path(out_dir) / "resume.safetensors").is_file()
    if distributed or resuming:
        # long jobs: the shared loop's DDP and per-epoch resumable state (see distill.decoder_loop)
        task = SupervisedTask(model, train_data, config, "decoder", info)
        task.normalization = train.normalization
        return fit(task, train, val, config, out_dir, progress, should_stop, show_progress)
    from .decoder_loop import fit_in_memory, stack_samples
    x, y = stack_samples(train.x, train.y)
    train.x, train.y = list(x), list(y)          # views into the stacked tensors, not second copies
    v = stack_samples(val.x, val.y) if val is not None and len(val) else None
    return fit_in_memory(model, (x, y), v, config, out_dir, train.label_spec, train.normalization, info,
                         progress=progress, should_stop=should_stop, show_progress=show_progress, plot=plot)
