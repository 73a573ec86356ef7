"""``marsam demo``: one command that shows the whole toolkit working and ends with a report."""
from __future__ import annotations



def _demo(args) -> int:
    from .pipeline import run_demo
    numbers = run_demo(args.out, data=args.data, sam_checkpoint=args.sam_checkpoint, profile=args.profile,
                       overwrite=args.overwrite, sam_model_type=args.sam_model_type, progress=True,
                       threads=args.threads)
    print(f"annotation ({numbers['engine']}) mIoU {numbers['annotation_iou']:.3f}; teacher mIoU "
          f"{numbers['teacher_miou']:.3f}; student mIoU {numbers['student_miou']:.3f} with "
          f"{numbers['student_params']:,} parameters, {numbers['student_speedup_vs_teacher']:.2f}x the teacher's speed (median of "
          f"{numbers.get('speed_rounds') or '?'} interleaved rounds)")
    print(f"report: {numbers['report']['html']}")
    return 0


def register(sub) -> None:
    from annotate.sam_options import add_sam_options
    p = sub.add_parser("demo", help="annotate, train, distil, evaluate and explain end to end; writes a report",
                       description="Runs the whole toolkit on synthetic Mars-like terrain (default) or on real data "
                                   "and writes report.md, report.html and report.json. The cpu profile finishes in "
                                   "about 10 minutes on 2 CPU cores.")
    p.add_argument("--out", default="marsam-demo", help="output folder for the report and models [marsam-demo]")
    p.add_argument("--data", help="images/+masks/ folder (e.g. ../shared/data/ai4mars-msl) or a Hugging Face "
                                  "dataset id [synthetic terrain generated on the fly]")
    add_sam_options(p, default="auto", extra_types=("auto",), old_model=("--sam-model",), old_checkpoint=False,
                    type_help="SAM model type of --sam-checkpoint (auto: read from the file)",
                    checkpoint_help="official SAM .pth; annotate with SAM and train the domain decoder "
                                    "[GrabCut, no decoder]")
    p.add_argument("--profile", default="cpu", choices=("cpu", "gpu"),
                   help="run size: cpu (96 px, small models, minutes on 2 cores) or gpu (256 px, paper-sized teacher) [cpu]")
    p.add_argument("--overwrite", action="store_true", help="replace a previous demo output in --out")
    p.add_argument("--threads", type=int, help="torch CPU threads [cpu profile: 2, gpu: PyTorch's default]")
    p.set_defaults(func=_demo)
