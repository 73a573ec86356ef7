"""Explanations of marsam models: what a segmentation model looks at, per class.

Every method takes a model (or Checkpoint), one image (a normalised 1 x C x H x W tensor, or
the raw image plus its normalisation) and, where it is class-specific, a class name or id; it
returns an :class:`Explanation` whose ``map`` is an image-sized, finite H x W float32 array.
Attributions go through captum on a per-class score (:mod:`.reduction`).
"""
from .attention import attention_maps
from .gradcam import gradcam, layer_names
from .inputs import Explanation
from .integrated_gradients import integrated_gradients, make_baseline
from .lime import lime, superpixels
from .neural_pca import ClassPCA, NeuralPCAResult, class_embeddings, neural_pca
from .overlays import overlay_rgb, save_overlay_png
from .reduction import ClassScore, class_score, pixel_counts
from .uncertainty_maps import entropy_map, mc_dropout_map

__all__ = ["attention_maps", "gradcam", "layer_names", "Explanation", "integrated_gradients", "make_baseline",
           "lime", "superpixels", "ClassPCA", "NeuralPCAResult", "class_embeddings", "neural_pca",
           "overlay_rgb", "save_overlay_png", "ClassScore", "class_score", "pixel_counts",
           "entropy_map", "mc_dropout_map"]
