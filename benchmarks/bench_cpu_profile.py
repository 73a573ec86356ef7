"""The `cpu` profile's student against a plain labels-only U-Net, the same wall time, side by side.

Issue 11's laptop target: the recipe's `cpu` profile, run end to end on 2 cores, must beat a
plain labels-only U-Net trained for the same wall time by >= 0.05 val mIoU. Both runs start
together, each pinned to its own core (``taskset``, one torch thread each: the same share of the
same machine at the same time), each with the same ``--minutes`` budget (``max_minutes`` with
``fit_epochs_to_budget``: the cosine schedule ends on time), each on all 4200 training images at
256 px, each choosing its best epoch on the first ``--select`` val images. Then both are
evaluated one after the other on the whole val split at 256 px (``marsam evaluate``).

- profile: ``marsam train student --no-distill --config cpu`` with its defaults (the recipe study's
  winners, ``distill/configs/cpu.yaml``), labels alone: a teacher trained on the same two cores
  inside the same budget is weaker than no teacher (the first release's 37-minute CPU teacher
  reached val mIoU 0.23);
- plain: the same command with nothing clever: full-resolution U-Net (no strided stem), CE
  without class weights, flips only, no EMA, constant recipe of the first release otherwise.

    python benchmarks/bench_cpu_profile.py [--minutes 25] [--out benchmarks/results/cpu_profile.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segmodels.atomic import atomic_write_json  # noqa: E402
from segmodels.device import machine_info  # noqa: E402

DATA = Path(os.environ.get("MARSAM_SHARED_DATA", ROOT.parent / "shared" / "data")) / "ai4mars-msl"
PLAIN = {"student_stem_stride": 1, "class_weights": False, "class_weighting": "none", "loss": "ce",
         "augment_policy": "flip", "ema": 0.0}


def _train_cmd(name: str, minutes: float, a, overrides: dict) -> list[str]:
    cmd = [sys.executable, "-m", "segmodels.cli", "train", "student", "--no-distill", "--config", "cpu",
           "--data", str(a.data), "--size", str(a.size), "--val-limit", str(a.select), "--threads", "1",
           "--epochs", str(a.max_epochs), "--seed", str(a.seed), "--out", str(a.work / name),
           "--set", "limit=null", "--set", f"max_minutes={minutes}", "--set", "fit_epochs_to_budget=true",
           "--set", "early_stopping=0"]
    for k, v in overrides.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=25.0, help="training budget of each run")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--select", type=int, default=200, help="val images for the best-epoch choice")
    ap.add_argument("--max-epochs", type=int, default=100, help="upper bound; the budget decides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-limit", type=int, default=None, help="val images to report on [all]")
    ap.add_argument("--work", type=Path, default=Path("runs/cpu-profile-vs-plain"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_profile.json")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    runs = {"profile": {}, "plain": PLAIN}
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0, 1]
    report = {"benchmark": "cpu profile vs plain labels-only U-Net, same wall time",
              "command": "python benchmarks/bench_cpu_profile.py " + " ".join(sys.argv[1:]),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(),
              "minutes_each": a.minutes, "size": a.size, "runs": {}}
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = {}
    t0 = time.time()
    for i, (name, o) in enumerate(runs.items()):
        cmd = _train_cmd(name, a.minutes, a, o)
        if len(cores) > 1:
            cmd = ["taskset", "-c", str(cores[i % len(cores)])] + cmd
        report["runs"][name] = {"overrides": o, "train_command": " ".join(cmd)}
        log = open(a.work / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT), log)
    for name, (p, log) in procs.items():
        rc = p.wait()
        log.close()
        report["runs"][name]["train_rc"] = rc
        report["runs"][name]["train_wall_s"] = round(time.time() - t0, 1)
    for name in runs:
        summary = a.work / name / "summary.json"
        if summary.is_file():
            s = json.loads(summary.read_text())
            report["runs"][name].update({k: s.get(k) for k in ("epochs_run", "epochs_planned", "stopped", "best_epoch",
                                                                 "seconds", "images_per_second") if k in s})
        ev = a.work / f"{name}-eval.json"
        cmd = [sys.executable, "-m", "segmodels.cli", "evaluate", "--checkpoint", str(a.work / name / "best.safetensors"),
               "--data", str(a.data), "--split", "val", "--size", str(a.size), "--threads", str(len(cores)),
               "--no-speed", "--worst", "0", "--json", str(ev)]
        if a.eval_limit:
            cmd += ["--limit", str(a.eval_limit)]
        subprocess.run(cmd, env=env, cwd=ROOT, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if ev.is_file():
            m = json.loads(ev.read_text())
            report["runs"][name].update({"val_miou": m["miou"], "val_iou": m["iou_per_class"], "ece": m.get("ece"),
                                         "params": m.get("params"), "gflops": m.get("gflops"),
                                         "val_images": m.get("images")})
        atomic_write_json(a.out, report)
    p, q = report["runs"]["profile"].get("val_miou"), report["runs"]["plain"].get("val_miou")
    if p is not None and q is not None:
        report["profile_minus_plain"] = round(p - q, 4)
        report["target"] = {"profile_minus_plain_at_least": 0.05, "met": p - q >= 0.05}
    report["machine"]["load_average_at_write"] = [round(v, 2) for v in os.getloadavg()]
    atomic_write_json(a.out, report)
    print(json.dumps({k: report["runs"][k].get("val_miou") for k in runs} | {"diff": report.get("profile_minus_plain")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
