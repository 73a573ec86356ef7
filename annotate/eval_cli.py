"""``marsam prompt-eval`` and ``marsam export``: the evaluation and export commands of annotate.

Registered through the ``marsam.commands`` entry point ``annotate_eval`` (pyproject.toml), apart
from ``annotate.cli`` so that each command family lives next to the code it drives.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segmodels.atomic import atomic_write_json
from segmodels.errors import MarsamError

log = logging.getLogger(__name__)

TINY_MODEL = "tiny"


def _modes(text: str) -> tuple[str, ...]:
    from .prompt_eval import SAM_MODES
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in modes if m not in SAM_MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"modes are a comma-separated list of {', '.join(SAM_MODES)}; got {text!r}")
    return modes


def _prompt_eval(args) -> int:
    from .prompt_eval import SAM_MODES, evaluate_prompts, find_samples, format_table
    from .sam_loading import build_tiny_sam, load_sam
    from segmodels.device import pick_device
    from .embeddings import EmbeddingCache
    if args.jitter < 0:
        raise MarsamError(f"--jitter must be >= 0 (a fraction of the box side, e.g. 0.1); got {args.jitter}")
    samples = find_samples(args.data, split=args.split, limit=args.limit)
    if args.engine == "grabcut":
        if args.modes not in (None, ("box",)):
            raise MarsamError("point and automatic modes need SAM; use --engine sam, or --modes box with GrabCut")
        sam_model, modes = None, ("box",)
    else:
        modes = args.modes or SAM_MODES
        if args.sam_model_type == TINY_MODEL:
            if args.sam_checkpoint:
                raise MarsamError("--sam-model-type tiny is the random-weight test SAM and takes no --sam-checkpoint; "
                                  "pass --sam-model-type vit_b|vit_l|vit_h with it")
            log.warning("--sam-model-type tiny: random weights; the SAM numbers test the pipeline, not SAM")
            sam_model = build_tiny_sam(device=pick_device(args.device))
        else:
            try:
                sam_model = load_sam(args.sam_model_type, args.sam_checkpoint, args.device)
            except MarsamError as e:
                raise MarsamError(f"{e} (or evaluate the weight-free baseline alone with --engine grabcut)") from None
    report = evaluate_prompts(
        samples, sam_model=sam_model, modes=modes, grabcut=not args.no_grabcut, jitter=args.jitter,
        seed=args.seed, min_area=args.min_area, points_per_side=args.points_per_side,
        cache=EmbeddingCache() if args.cache else None, progress=True)
    report["settings"].update(data=str(Path(args.data).resolve()), split=args.split, limit=args.limit)
    atomic_write_json(args.json, report)
    print(format_table(report))
    print(f"report written to {args.json}")
    return 0


def _export(args) -> int:
    from .exports import export_session
    from .session import Session
    session = Session.open(args.session)
    report = export_session(session, args.out, args.format, progress=True)
    print(report.summary())
    return 0


def register(sub) -> None:
    from .prompt_eval import DEFAULT_MIN_AREA
    from .sam_options import add_sam_options
    p = sub.add_parser(
        "prompt-eval", help="compare SAM box, point and automatic prompts (and GrabCut) against ground-truth masks",
        description="Derive one box and one interior point per connected ground-truth region, run each prompt "
                    "mode and report mean IoU per region and per image and the time per prompt.")
    p.add_argument("--data", required=True, help="folder with images/, masks/ (class ids, 255 ignore) and "
                                                 "optionally split.csv (id,split), e.g. the AI4Mars folder")
    p.add_argument("--split", default="val", help="rows of split.csv to use (default val)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of the split")
    p.add_argument("--modes", type=_modes, default=None,
                   help="comma-separated SAM modes among box,point,auto (default all; GrabCut: box)")
    p.add_argument("--engine", choices=("sam", "grabcut"), default="sam",
                   help="sam: the SAM modes plus the GrabCut box baseline; grabcut: the baseline alone")
    add_sam_options(p, extra_types=(TINY_MODEL,),
                    type_help="SAM model type; 'tiny' = random-weight test SAM (numbers are meaningless, for smoke tests)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--jitter", type=float, default=0.0,
                   help="box jitter as a fraction of the box side, to model a hurried expert (e.g. 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the box jitter")
    p.add_argument("--min-area", type=int, default=DEFAULT_MIN_AREA,
                   help=f"skip ground-truth regions smaller than this many pixels (default {DEFAULT_MIN_AREA})")
    p.add_argument("--points-per-side", type=int, default=32,
                   help="automatic mode's point grid (default 32, SAM's own)")
    p.add_argument("--no-grabcut", action="store_true", help="leave out the GrabCut box baseline")
    p.add_argument("--cache", action="store_true", help="keep SAM embeddings in marsam's embedding cache "
                                                        "(faster reruns; about 2 MB per image)")
    p.add_argument("--json", required=True, help="where to write the JSON report")
    p.set_defaults(func=_prompt_eval)

    e = sub.add_parser("export", help="write a session's labels as PNG masks, COCO JSON (RLE), a HF dataset "
                                      "or polygons (GeoJSON / GeoPackage)")
    e.add_argument("--session", required=True, help="session folder (with session.json)")
    e.add_argument("--format", choices=("png", "coco", "hf", "geojson", "gpkg"), default="png",
                   help="png: images/ + masks/ (AI4Mars layout); coco: annotations.json with RLE masks; "
                        "hf: datasets.Dataset (image, label) saved with save_to_disk; geojson/gpkg: one "
                        "polygon per region with class and area (map units for GeoTIFFs; geo extra)")
    e.add_argument("--out", required=True, help="destination folder")
    e.set_defaults(func=_export)
