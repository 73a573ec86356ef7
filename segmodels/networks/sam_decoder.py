"""The domain decoder of Julka and Granitzer on SAM's frozen image embedding."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import MarsamError
from ..normalization import SAM_EMBEDDING
from .base import SegmentationNet
from .registry import register_model

SAM_EMBED_CHANNELS = 256
SAM_EMBED_SIZE = 64
SAM_INPUT_SIZE = 1024


def _stage(cin: int, cout: int, refine: bool) -> nn.Sequential:
    layers = [nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2), nn.BatchNorm2d(cout), nn.GELU()]
    if refine:
        layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]
    return nn.Sequential(*layers)


@register_model("sam_decoder")
class SamDomainDecoder(SegmentationNet):
    """Three transposed-convolution stages (64 -> 128 -> 256 -> 512 px) and a class head.

    Input is the 256 x 64 x 64 embedding every SAM variant (vit_b/l/h) produces for its
    1024 x 1024 padded input, so the decoder is independent of the encoder size. Output
    logits are resized to ``out_size`` (SAM's 1024 input frame by default); map them to the
    original image with :func:`embedding_logits_to_image`, which removes SAM's padding.
    ``num_classes=1`` gives one logit for binary sigmoid segmentation.

    By default each stage is a transposed convolution, BatchNorm and GELU, as in the paper (and
    SAM's own mask upscaling): cheap enough that 100 epochs on a handful of cached embeddings run
    on a laptop CPU. ``refine=True`` adds a 3x3 convolution per stage, about 5 times the FLOPs,
    for larger training sets.
    """

    default_cam_layer = "stage3"
    input_kind = SAM_EMBEDDING

    def __init__(self, num_classes: int = 4, embed_channels: int = SAM_EMBED_CHANNELS,
                 width: int = 128, out_size: int = SAM_INPUT_SIZE, dropout: float = 0.1,
                 refine: bool = False, aleatoric: bool = False):
        w = int(width)
        super().__init__(embed_channels, num_classes, w // 4, aleatoric)
        self.out_size = int(out_size)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.stage1 = _stage(embed_channels, w, refine)
        self.stage2 = _stage(w, w // 2, refine)
        self.stage3 = _stage(w // 2, w // 4, refine)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            return
        if x.shape[-2:] != (SAM_EMBED_SIZE, SAM_EMBED_SIZE):
            raise MarsamError(f"the SAM domain decoder takes 256 x 64 x 64 SAM image embeddings; got "
                              f"{tuple(x.shape[1:])}; compute them with annotate's embedding cache")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        f = self.stage3(self.stage2(self.stage1(self.dropout(x))))
        if f.shape[-1] != self.out_size:
            f = F.interpolate(f, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return f


def embedding_logits_to_image(logits: torch.Tensor, input_size: tuple[int, int],
                              original_size: tuple[int, int], frame: int = SAM_INPUT_SIZE) -> torch.Tensor:
    """Undo SAM's resize-and-pad: crop the valid ``input_size`` region of the 1024 frame and
    resize it to the original image size (what ``Sam.postprocess_masks`` does for masks)."""
    if logits.shape[-1] != frame:
        logits = F.interpolate(logits, size=(frame, frame), mode="bilinear", align_corners=False)
    logits = logits[..., : input_size[0], : input_size[1]]
    return F.interpolate(logits, size=tuple(original_size), mode="bilinear", align_corners=False)
