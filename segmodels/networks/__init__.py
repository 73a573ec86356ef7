"""The networks: the student UNet, the AttentionUNet teacher and the SAM domain decoder."""
from .registry import build_model, list_models, register_model, DEFAULT_INPUT
from .base import SegmentationNet
from .unet import UNet
from .attention_unet import AttentionUNet, AttentionGate
from .sam_decoder import SamDomainDecoder, embedding_logits_to_image

__all__ = ["build_model", "list_models", "register_model", "DEFAULT_INPUT", "SegmentationNet",
           "UNet", "AttentionUNet", "AttentionGate", "SamDomainDecoder", "embedding_logits_to_image"]
