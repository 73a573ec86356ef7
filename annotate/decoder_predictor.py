"""The SAM-decoder kind of :class:`segmodels.predictors.Predictor`.

A domain decoder (Julka and Granitzer) segments SAM's 256 x 64 x 64 image embedding, not the
image: the embedding comes from the embedding cache (shared with the labelling tools, so an
image labelled with SAM is usually embedded already), the decoder's logits are mapped back from
SAM's padded 1024 frame (``segmodels.networks.embedding_logits_to_image``) and the tiles of a
large image are averaged where they overlap. It lives in annotate because annotate owns SAM and
the cache; importing annotate registers it, so ``load_predictor`` on a ``sam_decoder``
checkpoint returns one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segmodels.checkpoints import Checkpoint
from segmodels.errors import MarsamError
from segmodels.inference import class_probs
from segmodels.labels import LabelSpec
from segmodels.networks import embedding_logits_to_image
from segmodels.normalization import Normalization
from segmodels.predictors import base_normalization, label_spec_for, register_predictor_kind

from .embeddings import EmbeddingCache, embed_image
from .sam_loading import SamModel


@torch.no_grad()
def decoder_image_logits(decoder: nn.Module, sam_model, image: np.ndarray,
                         cache: EmbeddingCache | None = None) -> torch.Tensor:
    """1 x K x H x W logits of the decoder for a whole image; tiles are stitched (overlaps averaged)."""
    emb = embed_image(sam_model, image, cache)
    decoder.eval()
    dev = next(decoder.parameters()).device
    h, w = emb.image_size
    total = None
    count = torch.zeros(1, 1, h, w)
    for t in emb.tiles:
        logits = decoder(t.embedding.to(dev)).float()
        logits = embedding_logits_to_image(logits, t.input_size, t.original_size).cpu()
        if total is None:
            total = torch.zeros(1, logits.shape[1], h, w)
        x0, y0, x1, y1 = t.bounds
        total[..., y0:y1, x0:x1] += logits
        count[..., y0:y1, x0:x1] += 1
    return total / count.clamp_min(1)


@dataclass
class SamDecoderPredictor:
    """A domain decoder on SAM embeddings of the image. ``sam`` is an annotate SamModel, or a
    function returning one (called on first use, so a command can offer SAM without loading it
    for models that do not need it); it may also be attached later (the napari plugin attaches
    the annotator's). ``cache`` defaults to the user's embedding cache."""

    module: nn.Module
    label_spec: LabelSpec
    normalization: Normalization
    checkpoint: Checkpoint | None = None
    sam: object | None = None
    cache: EmbeddingCache | None = None

    @classmethod
    def from_source(cls, source: Checkpoint | nn.Module, normalization=None, label_spec: LabelSpec | None = None,
                    sam=None, cache=None, **_context) -> "SamDecoderPredictor":
        if isinstance(source, Checkpoint):
            module, ckpt = source.model, source
        else:
            module, ckpt = source, None
        spec = label_spec or (ckpt.label_spec if ckpt is not None else label_spec_for(module))
        return cls(module, spec, base_normalization(module, ckpt, normalization), ckpt, sam, cache)

    @property
    def model_name(self) -> str:
        return self.checkpoint.model_name if self.checkpoint is not None else self.module.model_name

    @property
    def name(self) -> str:
        path = self.checkpoint.path if self.checkpoint is not None else None
        return path.stem if path else self.model_name

    def _require_sam(self) -> SamModel:
        if callable(self.sam) and not isinstance(self.sam, SamModel):
            self.sam = self.sam()
        if self.sam is None:
            raise MarsamError(f"the {self.model_name} model segments SAM image embeddings, not images: give it "
                              "a SAM model (vit_b, vit_l or vit_h; load_predictor(..., sam=load_sam(...)) or "
                              "load SAM in the annotator) so annotate's embeddings feed it")
        return self.sam

    def logits(self, image: np.ndarray) -> torch.Tensor:
        """1 x K x H x W decoder logits of ``image`` (what distillation's soft labels are)."""
        return decoder_image_logits(self.module, self._require_sam(), image, self.cache)

    def probabilities(self, image: np.ndarray, *, tile: int = 512, overlap: int = 64, batch_size: int = 4,
                      device=None) -> np.ndarray:
        """K x H x W probabilities; SAM tiles large images itself, so the tiling options are unused."""
        return np.ascontiguousarray(class_probs(self.logits(image).float())[0].cpu().numpy(), np.float32)


register_predictor_kind("sam_decoder")(SamDecoderPredictor.from_source)
