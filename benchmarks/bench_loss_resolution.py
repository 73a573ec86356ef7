"""What the decoder's loss resolution does to its training masks, on HiRISE session labels.

The domain decoder is trained against targets in SAM's frame (the label map resized so its long
side is 1024, padded to 1024 x 1024) sampled at ``decoder_out_size`` (the loss resolution).
A target at R px keeps only what survives nearest-neighbour sampling by 1024 / R. This measures,
on the label maps a session holds for the real HiRISE pit crops (``../shared/data/hirise-pits``,
900 x 900 px; their YOLO pit boxes labelled with annotate's GrabCut engine, the labelling engine
that needs no SAM weights), how faithful such targets are: each map is taken to R px exactly as
``distill.decoder._sam_frame_target`` does, brought back to the image (nearest), and compared with
the full-resolution map: per-class IoU, the mean over classes, and the share of pits (connected
regions) that vanish altogether. The cost side (seconds per decoder epoch at each R) is in
benchmarks/results/interactive_cpu.json.

    python benchmarks/bench_loss_resolution.py [--split valid] [--sizes 64 128 256 512 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("MARSAM_SHARED_DATA", ROOT.parent / "shared" / "data")) / "hirise-pits"


def session_labels(split: str, limit: int | None) -> tuple[list[np.ndarray], str]:
    from annotate.boxfiles import images_with_boxes, read_boxes
    from annotate.engines import GrabCutEngine, label_image
    from segmodels.images import load_image
    from segmodels.labels import HIRISE_PITS
    images = sorted((DATA / split / "images").glob("*.jpg"))[:limit]
    boxes = read_boxes(DATA / split / "labels", "yolo", DATA / split / "images", HIRISE_PITS)
    pairs = images_with_boxes(boxes, images)
    engine = GrabCutEngine()
    maps = [label_image(engine, load_image(p), b) for p, b in sorted(pairs.items())]
    return maps, f"{len(maps)} HiRISE pit crops ({split}), YOLO boxes labelled with GrabCut"


def round_trip(label_map: np.ndarray, size: int, ignore: int = 255) -> np.ndarray:
    """The label map at ``size`` px of SAM's frame (as the decoder's targets) and back (nearest)."""
    from distill.decoder import _sam_frame_target
    from segmodels.networks.sam_decoder import SAM_INPUT_SIZE
    h, w = label_map.shape
    scale = SAM_INPUT_SIZE / max(h, w)
    ih, iw = int(h * scale + 0.5), int(w * scale + 0.5)
    target = _sam_frame_target(label_map, (ih, iw), size, ignore)
    frame = cv2.resize(target, (SAM_INPUT_SIZE, SAM_INPUT_SIZE), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(frame[:ih, :iw], (w, h), interpolation=cv2.INTER_NEAREST)


def fidelity(maps: list[np.ndarray], size: int, num_classes: int, ignore: int = 255) -> dict:
    inter = np.zeros(num_classes + 1)
    union = np.zeros(num_classes + 1)
    pits = lost = 0
    for m in maps:
        r = round_trip(m, size, ignore)
        a = np.where(m == ignore, num_classes, m)
        b = np.where(r == ignore, num_classes, r)
        for c in range(num_classes + 1):
            inter[c] += np.count_nonzero((a == c) & (b == c))
            union[c] += np.count_nonzero((a == c) | (b == c))
        fg = (m != ignore).astype(np.uint8)
        n, comp = cv2.connectedComponents(fg, connectivity=4)
        for k in range(1, n):
            pits += 1
            if not (r[comp == k] != ignore).any():
                lost += 1
    iou = {str(c): (round(float(inter[c] / union[c]), 4) if union[c] else None) for c in range(num_classes)}
    present = [v for v in iou.values() if v is not None]
    return {"loss_px": size, "scale_from_1024_frame": SAM_FRAME // size, "iou_per_class": iou,
            "miou_pit_classes": round(float(np.mean(present)), 4) if present else None,
            "iou_unlabelled": round(float(inter[-1] / union[-1]), 4),
            "regions": pits, "regions_lost": lost, "regions_lost_share": round(lost / max(pits, 1), 4)}


SAM_FRAME = 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="valid")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decoder_loss_resolution.json")
    args = ap.parse_args(argv)
    if not (DATA / args.split).is_dir():
        raise SystemExit(f"needs the HiRISE pits data at {DATA}")
    from segmodels.atomic import atomic_write_json
    from segmodels.labels import HIRISE_PITS
    t0 = time.perf_counter()
    maps, desc = session_labels(args.split, args.limit)
    sizes = [int(np.median([np.sqrt(np.count_nonzero(c)) for c in [m != 255]])) for m in maps]
    rows = [fidelity(maps, s, HIRISE_PITS.num_classes) for s in args.sizes]
    report = {"benchmark": "decoder loss resolution vs training-mask fidelity",
              "command": "python benchmarks/bench_loss_resolution.py " + " ".join(sys.argv[1:]),
              "labels": desc, "image_px": list(maps[0].shape) if maps else None,
              "labelled_area_sqrt_px_median": float(np.median(sizes)) if sizes else None,
              "rows": rows, "seconds": round(time.perf_counter() - t0, 1),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]}
    atomic_write_json(args.out, report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
