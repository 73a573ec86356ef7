"""``marsam embed`` and ``marsam annotate``: the batch side of SAM box annotation."""
from __future__ import annotations

import argparse
import json
import logging
import os

from segmodels.errors import MarsamError

log = logging.getLogger(__name__)


def _add_model_args(p) -> None:
    from .sam_options import add_sam_options
    add_sam_options(p)
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")


def _embed(args) -> int:
    from segmodels.images import list_images
    from .batch import embed_paths, shard
    from .embeddings import EmbeddingCache
    from .sam_loading import load_sam
    paths = list_images(args.images)
    if not paths:
        raise MarsamError(f"no images (png, jpg, tif, ...) in {args.images}")
    device = args.device
    if device is None and "LOCAL_RANK" in os.environ:
        import torch
        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    mine = shard(paths)
    model = load_sam(args.sam_model_type, args.sam_checkpoint, device)
    cache = EmbeddingCache(args.cache_dir)
    s = embed_paths(model, mine, cache, batch_size=args.batch_size, progress=not args.quiet)
    rank = f"rank {os.environ.get('RANK', 0)}/{os.environ.get('WORLD_SIZE', 1)}: " if "WORLD_SIZE" in os.environ else ""
    print(f"{rank}{len(mine)} images: {s.done} embedded, {s.skipped} already cached, {len(s.failed)} failed "
          f"in {s.seconds:.1f} s -> {cache.root}")
    for name, err in s.failed:
        print(f"  failed {name}: {err}")
    return 1 if s.failed and not s.done and not s.skipped else 0


def _pairs(images: list[str], boxes: list[str]) -> list[tuple[str, str]]:
    if len(boxes) == len(images):
        return list(zip(images, boxes))
    if len(boxes) == 1:
        return [(d, boxes[0]) for d in images]
    raise MarsamError(f"{len(images)} --images folders but {len(boxes)} --boxes; give one box file/folder "
                      "per image folder, or one for all")


def _label_spec(args):
    """(spec, box-class mapping, where it came from): --labels (a built-in name or a YAML file), else
    the YOLO data.yaml next to the box files (its classes kept, background first), else AI4Mars."""
    from segmodels.labels import AI4MARS, get_label_spec, read_label_yaml
    from .boxfiles import find_data_yaml
    if args.labels:
        if str(args.labels).lower().endswith((".yaml", ".yml")):
            spec, class_map = read_label_yaml(args.labels)
            return spec, class_map, args.labels
        return get_label_spec(args.labels), None, "--labels"
    if args.format == "yolo":
        found = {find_data_yaml(b) for b in args.boxes} - {None}
        if len(found) == 1:
            path = found.pop()
            return read_label_yaml(path)[0], None, str(path)
    return AI4MARS, None, "the default (give --labels NAME|FILE.yaml)"


def _annotate(args) -> int:
    from segmodels.images import list_images
    from .batch import annotate_session
    from .boxfiles import images_with_boxes, read_boxes
    from .embeddings import EmbeddingCache
    from .engines import make_engine
    from .session import Session
    spec, class_map, spec_from = _label_spec(args)
    complete = args.complete if args.complete is not None else spec.background_id is not None
    if complete and spec.background_id is None:
        raise MarsamError(f"label spec {spec.name!r} has no 'background' class, so --complete cannot fill the "
                          "unboxed pixels; drop --complete or use a spec with a background class")
    if not args.json:
        print(f"labels: {spec.name} ({', '.join(spec.classes)}) from {spec_from}", flush=True)
    problems: list[str] = []
    all_images, boxes = [], {}
    for images_dir, box_path in _pairs(args.images, args.boxes):
        imgs = list_images(images_dir)
        if not imgs:
            raise MarsamError(f"no images (png, jpg, tif, ...) in {images_dir}")
        all_images += imgs
        read = read_boxes(box_path, args.format, images_dir=images_dir, label_spec=spec, class_map=class_map,
                          problems=problems)
        boxes.update(images_with_boxes(read, imgs))
    cache = EmbeddingCache(args.cache_dir) if args.engine == "sam" else None
    engine = make_engine(args.engine, args.sam_model_type, args.sam_checkpoint, args.device, cache=cache)
    if args.engine == "sam" and engine.name != "sam":
        print(f"marsam: warning: no SAM checkpoint found; annotating with GrabCut instead "
              f"({getattr(engine, 'fallback_reason', '')})")
    session = Session.open_or_create(args.out, all_images, spec, engine=engine.name,
                                     model=getattr(engine, "model_name", None))
    if not args.json:
        print(f"unboxed pixels: {'background (complete images)' if complete else 'unlabelled'}", flush=True)
    try:
        s = annotate_session(session, engine, boxes, redo=args.redo, progress=not args.quiet, complete=complete)
    finally:
        session.close()
    counts = session.counts()
    summary = {"session": str(args.out), "engine": engine.name, "images": len(session.image_paths),
               "label_spec": spec.name, "classes": list(spec.classes), "complete": complete,
               **s.to_dict(), "box_file_problems": problems, "session_problems": session.problems,
               "session_counts": counts}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{engine.name}: {s.done} images labelled ({s.boxes} boxes), {s.skipped} already done, "
              f"{s.no_boxes} without boxes, {len(s.failed)} failed, in {s.seconds:.1f} s")
        print(f"session {args.out}: {counts['done']} of {len(session.image_paths)} images done")
        for name, err in s.failed:
            print(f"  failed {name}: {err}")
        for msg in session.problems:
            print(f"  {msg}")
        for msg in problems[:20]:
            print(f"  box file: {msg}")
        if len(problems) > 20:
            print(f"  ... and {len(problems) - 20} more box-file messages")
    return 1 if s.failed and not s.done and not s.skipped else 0


def register(sub) -> None:
    p = sub.add_parser("embed", help="precompute SAM embeddings of a folder into the cache",
                       description="Embed every image of a folder with SAM into the on-disk cache (batched, "
                                   "mixed precision on GPU). Under torchrun each rank embeds its share.")
    p.add_argument("--images", required=True, help="folder of images")
    _add_model_args(p)
    p.add_argument("--batch-size", type=int, default=None,
                   help="tiles per encoder call (default 4 on a GPU, 1 on a CPU)")
    p.add_argument("--cache-dir", default=None, help="embedding cache (default $MARSAM_CACHE_DIR/embeddings)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_embed)

    p = sub.add_parser("annotate", help="turn box files into label maps in a session folder",
                       description="Label images from expert boxes with SAM (or GrabCut) into a resumable "
                                   "session folder (session.json + labels/*.png).")
    p.add_argument("--images", required=True, nargs="+", help="image folder(s)")
    p.add_argument("--boxes", required=True, nargs="+",
                   help="box file or YOLO labels folder (one per --images folder, or one for all)")
    p.add_argument("--format", required=True, choices=("csv", "coco", "yolo"), help="box file format")
    p.add_argument("--out", required=True, help="session folder (created, or resumed if it exists)")
    p.add_argument("--engine", default="sam", choices=("sam", "grabcut"),
                   help="sam (falls back to grabcut with a warning when no checkpoint exists) or grabcut")
    _add_model_args(p)
    p.add_argument("--labels", default=None,
                   help="label spec: ai4mars, hirise-pits (all pit types as one 'pit') or a YAML file "
                        "(classes: [background, ...]; a YOLO data.yaml works). Default: the box files' "
                        "data.yaml when there is one (its classes kept, background first), else ai4mars")
    p.add_argument("--complete", action=argparse.BooleanOptionalAction, default=None,
                   help="the boxes mark every object, so unboxed pixels are background (default: yes when "
                        "the spec has a 'background' class, e.g. pits; no for terrain specs)")
    p.add_argument("--cache-dir", default=None, help="embedding cache (default $MARSAM_CACHE_DIR/embeddings)")
    p.add_argument("--redo", action="store_true", help="relabel images already done")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_annotate)
