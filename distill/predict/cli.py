"""``marsam predict`` and ``marsam export-model``."""
from __future__ import annotations

import json
from pathlib import Path

from segmodels.errors import MarsamError


def _predict(args) -> int:
    from segmodels.labels import get_label_spec
    from .models import open_predictor
    from .run import PredictSettings, predict_images
    from segmodels.device import pick_device
    args.device = str(pick_device(args.device))      # cuda, then mps, then cpu unless told otherwise
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    settings = PredictSettings(tta=args.tta or "", min_confidence=args.min_confidence,
                               uncertainty=tuple(args.uncertainty or ()), probs=args.probs,
                               mc_samples=args.mc_samples, vector=args.vector, vector_units=args.vector_units,
                               min_region=args.min_region, batch_size=args.batch_size, block=args.block,
                               tile=args.tile, overlap=args.overlap, tile_batch=args.tile_batch,
                               device=args.device, overwrite=args.overwrite, sort=args.sort,
                               progress=not args.quiet).check()
    predictor = open_predictor(args.checkpoint, args.pretrained, device=args.device,
                               sam_model_type=args.sam_model_type, sam_checkpoint=args.sam_checkpoint,
                               threads=args.threads)
    spec = get_label_spec(args.labels) if args.labels else None
    report = predict_images(predictor, args.images, args.out, settings, label_spec=spec)
    print(report.summary())
    if report.table:
        print(json.dumps({"csv": str(report.table[0]), "json": str(report.table[1])}))
    if report.failed and not report.predicted and not report.resumed:
        first = report.failed[0]
        raise MarsamError(f"no image could be predicted; first: {Path(first[0]).name}: {first[1]}")
    return 0


def _export_model(args) -> int:
    from segmodels.checkpoints import load_checkpoint
    from segmodels.onnx_models import export_onnx
    if (args.checkpoint is None) == (args.pretrained is None):
        raise MarsamError("give exactly one model: --checkpoint FILE.safetensors or --pretrained NAME")
    if args.pretrained:
        from distill.pretrained import load_pretrained
        ckpt = load_pretrained(args.pretrained)
    else:
        ckpt = load_checkpoint(args.checkpoint)
    out = Path(args.onnx)
    if out.suffix.lower() != ".onnx":
        raise MarsamError(f"--onnx {out} must end in .onnx")
    path = export_onnx(ckpt, out, size=args.size)
    diff = onnx_agreement(ckpt, path, size=args.size)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {ckpt.model_name}, labels {ckpt.label_spec.name}); "
          f"max |logit difference| against PyTorch on a {args.size} px input: {diff:.2e}")
    return 0


def onnx_agreement(ckpt, onnx_path, size: int = 256, seed: int = 0) -> float:
    """Max absolute logit difference between the checkpoint and its ONNX export on a random image."""
    import numpy as np
    import torch
    from segmodels.onnx_models import OnnxModel
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((1, int(ckpt.model.in_channels), size, size)).astype(np.float32))
    with torch.no_grad():
        ref = ckpt.model.eval()(x)
    return float((OnnxModel(onnx_path)(x) - ref).abs().max())


def register(sub) -> None:
    p = sub.add_parser("predict", help="label maps, overlays, uncertainty and a triage table for folders "
                                       "of images or whole products (GeoTIFF in, GeoTIFF/polygons out)")
    src = p.add_argument_group("model (one of)")
    src.add_argument("--checkpoint", help="marsam .safetensors (student, teacher, domain decoder) or .onnx file")
    src.add_argument("--pretrained", help="a shipped model, e.g. ai4mars-student")
    p.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--out", required=True, help="output folder (fixed layout, see README)")
    p.add_argument("--labels", help="expected label spec (the model must predict these classes)")
    p.add_argument("--uncertainty", action="append", choices=("entropy", "mc-dropout"),
                   help="float32 per-pixel maps to write (repeatable)")
    p.add_argument("--probs", action="store_true", help="also write K x H x W class probabilities")
    p.add_argument("--mc-samples", type=int, default=20)
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="abstain (label 255) where the top class probability is below this [0]")
    p.add_argument("--tta", nargs="?", const="h", choices=("h", "hv"),
                   help="test-time flip averaging: h = horizontal (rover images), hv = both axes (orbital)")
    p.add_argument("--vector", nargs="?", const="gpkg", choices=("gpkg", "geojson"),
                   help="polygons per region (class, area, mean confidence) [gpkg]")
    p.add_argument("--vector-units", default="auto", choices=("auto", "map", "pixel"),
                   help="map: require a CRS (error otherwise); auto: map units when georeferenced")
    p.add_argument("--min-region", type=int, default=1, help="smallest region (pixels) written as a polygon")
    p.add_argument("--sort", default="name", choices=("name", "uncertainty"),
                   help="table order; uncertainty = most uncertain first (triage)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs exist")
    p.add_argument("--batch-size", type=int, default=8, help="small images of one size per forward pass [8]")
    p.add_argument("--tile-batch", type=int, default=2,
                   help="tiles per forward pass inside a large image; memory grows with it [2]")
    p.add_argument("--tile", type=int, default=512, help="tile size for large images [512]")
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--block", type=int, default=2048,
                   help="images with a side above this are predicted in strips (bounded memory) [2048]")
    p.add_argument("--device", help="cpu, cuda, mps [auto]")
    p.add_argument("--threads", type=int, help="torch / onnxruntime CPU threads")
    p.add_argument("--sam-model-type", default="vit_b", help="SAM of a domain-decoder checkpoint")
    p.add_argument("--sam-checkpoint", help="SAM .pth for a domain-decoder checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)

    e = sub.add_parser("export-model", help="write a student or teacher as ONNX (runs with onnxruntime)")
    e.add_argument("--checkpoint", help="marsam .safetensors checkpoint")
    e.add_argument("--pretrained", help="a shipped model, e.g. ai4mars-student")
    e.add_argument("--onnx", required=True, metavar="OUT.onnx")
    e.add_argument("--size", type=int, default=256, help="trace size (any size runs afterwards) [256]")
    e.set_defaults(func=_export_model)
