"""annotate: SAM box prompting with a disk embedding cache, sessions that never lose work,
box-file readers, batch annotation commands (``marsam embed``, ``marsam annotate``) and the
SAM-decoder kind of ``segmodels.predictors.Predictor`` (registered on import).

Dependency direction: annotate imports segmodels only; distill and the napari plugin import
annotate through the names below.
"""
from .boxfiles import FORMATS, read_boxes
from .decoder_predictor import SamDecoderPredictor, decoder_image_logits
from .embeddings import EmbeddingCache, EmbeddingTile, ImageEmbedding, embed_image, embed_images
from .engines import GrabCutEngine, PromptEngine, SamEngine, label_image, make_engine, merge_masks
from .prompts import BoxPrompt, clip_box
from .sam_loading import SAM_MODEL_TYPES, SamModel, build_tiny_sam, load_sam
from .session import Session

__all__ = [
    "FORMATS", "read_boxes",
    "SamDecoderPredictor", "decoder_image_logits",
    "EmbeddingCache", "EmbeddingTile", "ImageEmbedding", "embed_image", "embed_images",
    "GrabCutEngine", "PromptEngine", "SamEngine", "label_image", "make_engine", "merge_masks",
    "BoxPrompt", "clip_box",
    "SAM_MODEL_TYPES", "SamModel", "build_tiny_sam", "load_sam",
    "Session",
]
