"""``marsam explain``: explanation and uncertainty maps of a checkpoint on images.

    marsam explain --checkpoint C --image I [I ...] --method gradcam|ig|lime|attention|entropy|mc-dropout
                   [--class NAME] [--steps 32] [--samples N] --out DIR
    marsam explain pca --checkpoint C --data D [--limit N] --out DIR

The first form writes ``<stem>_<method>[_<class>].png`` (overlay figure) and ``.npy`` (the float
map, image-sized) per image; a class-specific method without ``--class`` explains the class
the model predicts on most pixels of that image. The second writes ``neural_pca.json`` and
``neural_pca.png``. An unreadable image is reported and skipped; the exit status is 1 when
any image failed.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from ..errors import MarsamError

METHODS = ("gradcam", "ig", "lime", "attention", "entropy", "mc-dropout")
CLASS_METHODS = ("gradcam", "ig", "lime")


def register(sub) -> None:
    p = sub.add_parser("explain", help="explanation / uncertainty maps of a checkpoint, or neural PCA",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=["pca"], help="'pca' for the neural PCA report")
    p.add_argument("--checkpoint", required=True, help="a marsam .safetensors checkpoint")
    p.add_argument("--image", nargs="+", help="image file(s) to explain")
    p.add_argument("--method", choices=METHODS, help="explanation or uncertainty method")
    p.add_argument("--class", dest="cls", help="class name or id (default: the dominant predicted class)")
    p.add_argument("--layer", help="Grad-CAM layer (default: the model's last decoder block)")
    p.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps (default 32)")
    p.add_argument("--baseline", default="black", help="IG/LIME baseline: black, mean, blur or an intensity")
    p.add_argument("--internal-batch-size", type=int, default=8, help="IG images per forward pass (memory bound)")
    p.add_argument("--samples", type=int, help="MC dropout passes (default 20) or LIME samples (default 200)")
    p.add_argument("--segments", type=int, default=50, help="LIME: number of SLIC superpixels")
    p.add_argument("--data", help="pca: a folder of images or a folder with an images/ subfolder")
    p.add_argument("--limit", type=int, help="pca: use at most N images")
    p.add_argument("--components", type=int, default=5, help="pca: principal components per class")
    p.add_argument("--pool", choices=["predicted", "all"], default="predicted",
                   help="pca: pool features over the class's predicted pixels or all pixels")
    p.add_argument("--device", help="cpu, cuda, mps (default: automatic)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.action == "pca":
        return run_pca(args)
    if not args.image or not args.method:
        raise MarsamError("marsam explain needs --image and --method (or the 'pca' action with --data)")
    return run_maps(args)


def _baseline(value: str):
    try:
        return float(value)
    except ValueError:
        return value


def _dominant_class(ck, img, device) -> int:
    from ..predictors import predict
    labels = predict(ck, img, device=device).labels
    return int(np.bincount(labels.ravel()).argmax())


#: methods that run the network on the whole image at once (gradients, perturbations, dropout
#: passes) are refused beyond this many pixels; entropy is tiled and takes any size marsam reads
MAX_WHOLE_IMAGE_PIXELS = 1024 * 1024


def _check_size(method: str, h: int, w: int) -> None:
    if method != "entropy" and h * w > MAX_WHOLE_IMAGE_PIXELS:
        raise MarsamError(f"the image is {w}x{h} pixels; --method {method} runs the model on the whole image at "
                          f"once and is bounded to {MAX_WHOLE_IMAGE_PIXELS / 1e6:.1f} Mpx (1024 x 1024) to stay "
                          "within a laptop's memory: crop the region of interest, or use --method entropy (tiled)")


def explain_image(ck, img: np.ndarray, method: str, cls, args, device):
    """The Explanation of one image with one method, options taken from ``args``."""
    from . import attention_maps, entropy_map, gradcam, integrated_gradients, lime, mc_dropout_map

    _check_size(method, *np.shape(img)[:2])

    if method in CLASS_METHODS and cls is None:
        cls = _dominant_class(ck, img, device)
    if method == "gradcam":
        return gradcam(ck, img, cls, layer=args.layer, device=device)
    if method == "ig":
        return integrated_gradients(ck, img, cls, steps=args.steps, baseline=_baseline(args.baseline),
                                    internal_batch_size=args.internal_batch_size, device=device)
    if method == "lime":
        base = args.baseline if args.baseline != "black" else "mean"  # LIME's default: switched off = grey
        return lime(ck, img, cls, n_samples=args.samples or 200, n_segments=args.segments,
                    baseline=_baseline(base), device=device, show_progress=True)
    if method == "attention":
        return attention_maps(ck, img, device=device)
    if method == "entropy":
        return entropy_map(ck, img, device=device)
    return mc_dropout_map(ck, img, samples=args.samples or 20, device=device)


_LABELS = {"gradcam": "Grad-CAM", "ig": "IG attribution", "lime": "LIME coefficient", "attention": "gate psi",
           "entropy": "entropy (nats)", "mc-dropout": "mutual information (nats)"}


def _title(e, stem: str) -> str:
    x = e.extras
    t = f"{stem}  {e.method}" + (f" [{e.class_name}]" if e.class_name else "")
    if e.method == "ig":
        t += f"  delta={x['delta']:.3g} ({100 * x['relative_delta']:.2f}%)"
    elif e.method == "lime":
        t += f"  R^2={x['r2']:.3f}"
    elif e.method == "gradcam":
        t += f"  layer {x['layer']}"
    elif e.method == "entropy":
        t += f"  max log K={x['log_k']:.2f}"
    elif e.method == "mc-dropout":
        t += f"  {x['samples']} samples"
    return t


def write_explanation(out: Path, stem: str, img: np.ndarray, e) -> list[Path]:
    from ..atomic import atomic_write_npy
    from .overlays import save_overlay_png

    name = f"{stem}_{e.method}" + (f"_{e.class_name}" if e.class_name else "")
    written = [out / f"{name}.png", out / f"{name}.npy"]
    save_overlay_png(written[0], img, e.map, title=_title(e, stem), label=_LABELS.get(e.method, ""),
                     signed=e.method in ("ig", "lime"))
    atomic_write_npy(written[1], e.map)
    for gname, g in zip(e.extras.get("gate_names", []), e.extras.get("gates", [])):
        p = out / f"{name}_{gname}.png"
        save_overlay_png(p, img, g, title=f"{stem}  {gname}", label="gate psi", signed=False)
        written.append(p)
    return written


def _summary(extras: dict) -> str:
    """The numbers of an explanation as 'key value, ...' (floats to 4 significant digits)."""
    parts = []
    for k, v in extras.items():
        if k == "warning" or isinstance(v, bool) or not isinstance(v, (int, float, str)):
            continue
        if isinstance(v, float):
            if math.isnan(v):
                continue
            v = f"{v:.4g}"
        parts.append(f"{k} {v}")
    return ", ".join(parts)


def run_maps(args) -> int:
    from tqdm import tqdm

    from ..predictors import load_predictor
    from ..device import pick_device
    from ..images import image_size, load_image

    device = pick_device(args.device)
    ck = load_predictor(args.checkpoint, device=device)
    cls = ck.label_spec.class_id(args.cls) if args.cls is not None else None
    out = Path(args.out)
    failed = 0
    seen: dict[str, str] = {}
    for path in tqdm(args.image, desc=f"explain {args.method}", unit="image", disable=len(args.image) < 2):
        stem = Path(path).stem
        if stem in seen:  # outputs are named by stem: a second image of that name would overwrite them
            failed += 1
            print(f"marsam: skipped {path}: {seen[stem]} has the same name and its maps are in {out}; "
                  "rename one of them", file=sys.stderr)
            continue
        seen[stem] = str(path)
        try:
            _check_size(args.method, *image_size(path))   # from the header: refused before decoding
            img = load_image(path)
            if args.method in ("ig", "lime", "mc-dropout"):     # the long ones say what they do first
                n = {"ig": f"{args.steps} steps", "lime": f"{args.samples or 200} samples",
                     "mc-dropout": f"{args.samples or 20} passes"}[args.method]
                print(f"{args.method} on {Path(path).name}: {n} ...", file=sys.stderr, flush=True)
            e = explain_image(ck, img, args.method, cls, args, device)
            files = write_explanation(out, Path(path).stem, img, e)
        except MarsamError as err:
            if len(args.image) == 1:
                raise
            failed += 1
            print(f"marsam: skipped {path}: {err}", file=sys.stderr)
            continue
        print(f"{files[0]}  {_summary(e.extras)}")
        if e.extras.get("warning"):
            print(f"marsam: warning: {e.extras['warning']}", file=sys.stderr)
    return 1 if failed else 0


def run_pca(args) -> int:
    from tqdm import tqdm

    from ..atomic import atomic_write_json
    from ..predictors import load_predictor
    from ..device import pick_device
    from ..images import list_images, load_image
    from ..mask_folder import image_folder
    from .neural_pca import neural_pca
    from .pca_report import save_pca_png

    if not args.data:
        raise MarsamError("marsam explain pca needs --data (a folder of images or one with images/)")
    device = pick_device(args.device)
    ck = load_predictor(args.checkpoint, device=device)
    folder = image_folder(args.data)
    paths = list_images(folder)[: args.limit] if args.limit else list_images(folder)
    if not paths:
        raise MarsamError(f"no images (png, jpg, tif, ...) in {folder}")
    bad: list[dict] = []

    def images():
        for p in paths:
            try:
                yield p.stem, load_image(p)
            except MarsamError as err:
                bad.append({"image": p.stem, "error": str(err)})
                print(f"marsam: skipped {p}: {err}", file=sys.stderr)

    classes = [args.cls] if args.cls is not None else None
    res = neural_pca(ck, images(), classes=classes, n_components=args.components, pool=args.pool, device=device,
                     progress=lambda it: tqdm(it, total=len(paths), desc="neural PCA", unit="image"))
    res.skipped = bad + res.skipped
    out = Path(args.out)
    report = dict(res.to_dict(), checkpoint=str(args.checkpoint), data=str(folder), images=len(paths))
    atomic_write_json(out / "neural_pca.json", report)
    save_pca_png(out / "neural_pca.png", res, {p.stem: p for p in paths})
    for c in res.classes:
        ratio = ", ".join(f"{r:.2f}" for r in c.explained_ratio[:3])
        top = ", ".join(c.top_images[0][:3]) if c.top_images else "-"
        print(f"{c.class_name}: {len(c.image_ids)} images, explained variance [{ratio}], PC1 top images: {top}")
    print(f"wrote {out / 'neural_pca.json'} and {out / 'neural_pca.png'}")
    return 1 if res.skipped else 0
