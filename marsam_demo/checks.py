"""Bad input is refused before any long work starts.

A demo that trains for minutes and then fails on a typo wastes the user's time, and one that
writes into a folder holding an older run mixes two runs into one report. So the output folder,
the data source and the SAM checkpoint are checked first, each with a message that says how to
fix it. Nothing here is slow: the SAM file's encoder width is read through a memory map.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from segmodels.errors import MarsamError
from segmodels.mask_folder import has_layout

MARKER = ".marsam-demo"   # written into every demo output folder; --overwrite only replaces those


@dataclass
class DataSource:
    kind: str          # "synthetic", "folder" or "hub"
    source: str        # "" for synthetic, the folder path or the hub id

    def describe(self) -> str:
        return {"synthetic": "procedurally generated Mars-like terrain (distill.synthetic)",
                "folder": f"folder {self.source}", "hub": f"Hugging Face dataset {self.source}"}[self.kind]


def _is_hub_id(src: str) -> bool:
    """``owner/name`` with nothing path-like about it (hub ids have exactly one slash)."""
    return (src.count("/") == 1 and "\\" not in src and not src.startswith((".", "/", "~"))
            and all(part.strip() for part in src.split("/")))


def check_data(data: str | os.PathLike | None) -> DataSource:
    """Where the demo's images come from; a missing folder is refused here, a hub id is opened later."""
    if data in (None, "", "synthetic"):
        return DataSource("synthetic", "")
    src = str(data)
    path = Path(src).expanduser()
    if path.exists():
        if not path.is_dir():
            raise MarsamError(f"--data {src} is a file; give a folder with images/ and masks/ "
                              "(and split.csv), like shared/data/ai4mars-msl, or a Hugging Face id")
        if not has_layout(path):
            raise MarsamError(f"--data {src} has no images/ and masks/ folders; the demo needs ground-truth "
                              "masks to simulate the expert and to score every model")
        return DataSource("folder", str(path.resolve()))
    if not _is_hub_id(src):
        raise MarsamError(f"--data folder {src} does not exist; check the path (e.g. "
                          "../shared/data/ai4mars-msl) or give a Hugging Face id like hassanjbara/AI4MARS")
    return DataSource("hub", src)


def check_output(out: str | os.PathLike, overwrite: bool, data: DataSource | None = None) -> Path:
    """The output folder, refused when it holds anything unless ``overwrite`` (and then only a demo's).

    An empty folder is accepted (e.g. one made by ``mktemp -d``). ``overwrite`` replaces only a
    folder a previous demo wrote (it holds the marker file), so a mistyped ``--out ~`` can never
    delete a home folder. Removal happens in :func:`prepare_output`, after every other check.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise MarsamError(f"--out {out} is a file; give a folder for the report")
    if data is not None and data.kind == "folder":
        d, o = Path(data.source).resolve(), out.resolve()
        if d == o or o in d.parents:
            raise MarsamError(f"--out {out} contains the --data folder {data.source}; write the report elsewhere")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise MarsamError(f"output folder {out} already exists and is not empty; choose another --out or "
                              "pass --overwrite to replace the previous demo there")
        if not (out / MARKER).is_file():
            raise MarsamError(f"output folder {out} holds files that no marsam demo wrote (no {MARKER}); "
                              "--overwrite only replaces a previous demo output, so choose another --out")
    return out


def prepare_output(out: Path) -> Path:
    """Remove a previous demo output (already checked) and start a fresh folder with the marker."""
    if out.is_dir() and (out / MARKER).is_file():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by marsam demo; --overwrite may replace this folder\n")
    return out


def check_sam_checkpoint(path: str | os.PathLike | None, model_type: str = "auto") -> str | None:
    """The SAM model type of the checkpoint at ``path`` (None when no checkpoint is given).

    Official files are plain state dicts; their image-encoder width tells vit_b, vit_l and vit_h
    apart. Anything else (a marsam .safetensors, another network's .pth, a truncated download)
    is refused now rather than after the data has been prepared.
    """
    if path is None:
        return None
    from annotate.sam_loading import SAM_MODEL_TYPES, checkpoint_model_type
    p = Path(path).expanduser()
    if not p.is_file():
        raise MarsamError(f"SAM checkpoint {p} does not exist; check the path, or leave --sam-checkpoint out "
                          "to annotate with GrabCut")
    if model_type not in ("auto", *SAM_MODEL_TYPES):
        raise MarsamError(f"unknown SAM model type {model_type!r}; use auto or one of {', '.join(SAM_MODEL_TYPES)}")
    return checkpoint_model_type(p, model_type)


def check_hub_reachable(repo_id: str, timeout: float = 5.0) -> None:
    """Refuse an unreachable or unknown hub dataset in seconds, not after the hub client's retries.

    ``datasets`` retries a failing request for about half a minute before it gives up; a quick
    connection test and one metadata call answer the same question at once. With
    ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set the user wants the local cache, so the hub
    is not contacted and ``datasets`` decides.
    """
    import socket
    from urllib.parse import urlparse
    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    hint = ("download it on a machine with network access (datasets.load_dataset(...).save_to_disk(DIR)) "
            "and pass --data DIR, or use an images/+masks/ folder such as shared/data/ai4mars-msl")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise MarsamError(f"cannot reach the Hugging Face hub ({host}: {e.strerror or e}) to get dataset "
                          f"{repo_id}; {hint}") from None
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.utils import RepositoryNotFoundError
    except ImportError:  # pragma: no cover - datasets depends on huggingface_hub
        return
    try:
        HfApi(endpoint=endpoint).dataset_info(repo_id, timeout=timeout)
    except RepositoryNotFoundError:
        raise MarsamError(f"dataset {repo_id} does not exist on the Hugging Face hub (or is private); "
                          "check the id, e.g. hassanjbara/AI4MARS") from None
    except Exception as e:
        raise MarsamError(f"cannot read dataset {repo_id} from the Hugging Face hub "
                          f"({type(e).__name__}: {str(e)[:120]}); {hint}") from None
