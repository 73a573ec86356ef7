"""Loading Segment Anything: official checkpoints, safe unpickling and a tiny model for tests.

The checkpoint is looked up in this order: an explicit path, ``$MARSAM_SAM_CHECKPOINT``, the
official file in the user cache (``$MARSAM_CACHE_DIR/sam`` or ``~/.cache/marsam/sam``), and
last a one-time download from the official address. Downloads go to a temporary file, are
checked against the published SHA-256 and only then moved into place, so an interrupted
download never leaves a truncated ``.pth`` that would fail later with an obscure error.

Official ``.pth`` files are plain state dicts; they load with ``torch.load(weights_only=True)``
so that nothing in them can run code.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from segmodels.atomic import atomic_path, atomic_write_json
from segmodels.device import pick_device
from segmodels.errors import MarsamError, WeightsUnavailable

log = logging.getLogger(__name__)

SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h")

_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
CHECKPOINT_FILES = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
# SHA-256 of the official files as published by several independent projects (micro-sam's model
# registry among them); the short code in each file name is NOT a prefix of this digest.
CHECKPOINT_SHA256 = {
    "vit_b": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    "vit_l": "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    "vit_h": "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
}
# The image encoder width tells the model types apart in a state dict.
_EMBED_DIM = {"vit_b": 768, "vit_l": 1024, "vit_h": 1280}
#: the state-dict key whose width tells the model type (every SAM checkpoint has it)
PATCH_KEY = "image_encoder.patch_embed.proj.weight"


@dataclass
class SamModel:
    """A Segment Anything model plus what identifies it in embedding-cache keys."""
    sam: torch.nn.Module
    model_type: str
    checkpoint_id: str
    device: torch.device


def cache_root() -> Path:
    root = os.environ.get("MARSAM_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "marsam"


def checkpoint_url(model_type: str) -> str:
    """Official address; ``$MARSAM_SAM_BASE_URL`` points at a mirror (or a local server in tests)."""
    base = os.environ.get("MARSAM_SAM_BASE_URL", _BASE_URL)
    return base.rstrip("/") + "/" + CHECKPOINT_FILES[model_type]


def _check_type(model_type: str) -> str:
    if model_type not in SAM_MODEL_TYPES:
        raise MarsamError(f"unknown SAM model type {model_type!r}; use one of {', '.join(SAM_MODEL_TYPES)}")
    return model_type


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_id(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint file, remembered by (path, size, mtime) so a 2.5 GB vit_h is hashed once.

    The digest, not the path, goes into embedding-cache keys: the same weights under two names
    share embeddings, and a file replaced by other weights never reuses stale ones.
    """
    path = Path(path).resolve()
    st = path.stat()
    index_file = cache_root() / "sam" / "hashes.json"
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    if key not in index:
        index[key] = sha256_file(path)
        try:
            atomic_write_json(index_file, index)
        except OSError:  # a read-only cache only costs a re-hash next time
            pass
    return index[key]


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None,
                  timeout: float = 30.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` before the file appears."""
    from tqdm import tqdm
    dest = Path(dest)
    try:
        with atomic_path(dest) as tmp:
            h = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as f:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                          disable=not progress, leave=False) as bar:
                    while block := resp.read(1 << 20):
                        f.write(block)
                        h.update(block)
                        bar.update(len(block))
            if sha256 and h.hexdigest() != sha256.lower():
                raise MarsamError(f"download of {url} is corrupt (sha256 {h.hexdigest()[:12]}..., expected "
                                  f"{sha256[:12]}...); run again, or download it by hand and put it at {dest}")
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise WeightsUnavailable(f"cannot download {url} ({getattr(e, 'reason', e)}); download it by hand and put "
                                 f"it at {dest}, or pass --sam-checkpoint PATH / set MARSAM_SAM_CHECKPOINT") from None
    return dest


def find_checkpoint(model_type: str = "vit_b", checkpoint: str | os.PathLike | None = None,
                    download: bool = True) -> Path:
    """The checkpoint file to use, downloading the official one into the cache if allowed."""
    _check_type(model_type)
    if checkpoint is None:
        checkpoint = os.environ.get("MARSAM_SAM_CHECKPOINT") or None
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise MarsamError(f"MARSAM_SAM_CHECKPOINT={checkpoint} does not exist; fix the variable or unset it")
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise MarsamError(f"SAM checkpoint {path} does not exist; check the path or leave --sam-checkpoint out "
                              f"to use the official {CHECKPOINT_FILES[model_type]}")
        return path
    cached = cache_root() / "sam" / CHECKPOINT_FILES[model_type]
    if cached.is_file():
        return cached
    if not download or os.environ.get("MARSAM_OFFLINE"):
        raise WeightsUnavailable(f"no SAM {model_type} checkpoint found; download {checkpoint_url(model_type)} and "
                                 f"put it at {cached}, or pass --sam-checkpoint PATH / set MARSAM_SAM_CHECKPOINT")
    log.info("downloading the official SAM %s checkpoint to %s", model_type, cached)
    return download_file(checkpoint_url(model_type), cached, CHECKPOINT_SHA256[model_type])


def detect_model_type(state_dict: dict) -> str | None:
    """vit_b, vit_l or vit_h from the image encoder's width; None when it matches none."""
    w = state_dict.get(PATCH_KEY)
    if w is None:
        return None
    for t, dim in _EMBED_DIM.items():
        if w.shape[0] == dim:
            return t
    return None


def _why_unloadable(e: Exception) -> str:
    """One whole sentence for why torch.load refused a file. torch's own messages run to a page
    (cutting them at a fixed length left the user half a sentence); the part that names the
    cause is the ``WeightsUnpickler error`` detail, or the first line."""
    msg = str(e)
    if "Weights only load failed" in msg:
        detail = msg.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in msg else ""
        detail = next((line.strip() for line in detail.splitlines() if line.strip()), "")
        if "Unsupported global" in detail:
            return ("it holds pickled Python objects, which marsam never unpickles (torch.load with "
                    f"weights_only=True: {detail.split('.')[0][:160]})")
        return f"it is damaged or not a PyTorch file ({detail[:160] or 'unpickling failed'})"
    first = next((line.strip() for line in msg.splitlines() if line.strip()), "")
    if len(first) > 160:
        first = first[:160].rsplit(" ", 1)[0] + " ..."
    return f"it is damaged or not a PyTorch file ({type(e).__name__}{': ' + first if first else ''})"


def read_state_dict(path: str | os.PathLike, mmap: bool = False) -> dict:
    """The state dict of an official SAM ``.pth``, read with ``weights_only`` (no code is unpickled).

    ``mmap`` reads lazily, for a quick look at the encoder width of a 2.5 GB file. A marsam
    ``.safetensors`` file, a damaged file and another network's weights are refused in one line.
    """
    p = Path(path)
    if p.suffix == ".safetensors":
        raise MarsamError(f"{p} is a marsam .safetensors checkpoint, not a Segment Anything one; give an "
                          "official sam_vit_b/l/h .pth from the segment-anything release")
    try:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            obj = torch.load(str(p), map_location="cpu", weights_only=True)   # old format: no mmap
    except Exception as e:  # unpickling refused or a damaged file
        raise MarsamError(f"cannot load SAM checkpoint {p}: {_why_unloadable(e)}; use an official "
                          "segment-anything .pth (a plain state dict)") from None
    if isinstance(obj, dict) and PATCH_KEY not in obj:
        for k in ("model", "state_dict"):
            if isinstance(obj.get(k), dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or PATCH_KEY not in obj:
        raise MarsamError(f"{p} is not a Segment Anything checkpoint (no image encoder weights, {PATCH_KEY}); "
                          "use sam_vit_b/l/h .pth files from the segment-anything release")
    return obj


def check_model_type(state_dict: dict, path, model_type: str = "auto") -> str:
    """The model type of ``state_dict`` (read from ``path``), refused when it is not ``model_type``
    (``"auto"`` accepts any SAM type)."""
    found = detect_model_type(state_dict)
    if found is None:
        raise MarsamError(f"{path} has an image encoder of width {state_dict[PATCH_KEY].shape[0]}, which matches no "
                          f"SAM model type ({', '.join(SAM_MODEL_TYPES)}); give an official checkpoint")
    if model_type != "auto" and found != model_type:
        raise MarsamError(f"SAM checkpoint {path} is a {found} checkpoint, not {model_type}; "
                          f"pass --sam-model-type {found}")
    return found


def checkpoint_model_type(path: str | os.PathLike, model_type: str = "auto") -> str:
    """The SAM model type of the checkpoint at ``path``, read lazily (memory-mapped) and checked."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise MarsamError(f"SAM checkpoint {p} does not exist; check the path")
    return check_model_type(read_state_dict(p, mmap=True), p, model_type)


def load_state_dict(path: str | os.PathLike, model_type: str) -> dict:
    """Read a SAM state dict safely and make sure it is of ``model_type``."""
    obj = read_state_dict(path)
    check_model_type(obj, path, model_type)
    return obj


def load_sam(model_type: str = "vit_b", checkpoint: str | os.PathLike | None = None,
             device: str | torch.device | None = None, download: bool = True) -> SamModel:
    """Build a SAM of ``model_type`` with its official (or given) weights, in eval mode on ``device``."""
    from segment_anything import sam_model_registry
    _check_type(model_type)
    path = find_checkpoint(model_type, checkpoint, download=download)
    state = load_state_dict(path, model_type)
    sam = sam_model_registry[model_type](checkpoint=None)
    try:
        sam.load_state_dict(state)
    except RuntimeError as e:
        raise MarsamError(f"SAM checkpoint {path} does not match the {model_type} architecture "
                          f"({str(e).splitlines()[0][:160]})") from None
    dev = pick_device(device)
    sam.to(dev).eval()
    return SamModel(sam=sam, model_type=model_type, checkpoint_id=file_id(path), device=dev)


def build_tiny_sam(seed: int = 0, device: str | torch.device = "cpu", embed_dim: int = 64) -> SamModel:
    """A random-weight SAM built like ``segment_anything.build_sam`` but with a 2-block, narrow encoder.

    It runs the real predictor code path (1024 px input, 256 x 64 x 64 embedding, the full mask
    decoder) in well under a second on a CPU, which is what tests and benchmarks need; its masks
    are meaningless.
    """
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=2, embed_dim=embed_dim, img_size=1024, mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=16,
                qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1,), window_size=14, out_chans=256),
            prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                         input_image_size=(1024, 1024), mask_in_chans=16),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    finally:
        torch.random.set_rng_state(gen_state)
    dev = torch.device(device)
    sam.to(dev).eval()
    return SamModel(sam=sam, model_type="tiny", checkpoint_id=f"tiny-random-d{embed_dim}-seed{seed}", device=dev)
