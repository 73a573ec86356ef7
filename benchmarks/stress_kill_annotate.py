"""Fault stress: ``marsam annotate`` killed with SIGKILL at random moments, resumed, compared.

The HiRISE ``valid`` images are labelled with GrabCut into a session by one uninterrupted
``marsam annotate`` process (the reference). Then another session is labelled by processes that
are each killed with SIGKILL at a random moment, and finally by one run to the end. Each killed
run is let label a random number of further images (at least one, so the kills spread over the
whole batch) and is then killed after a random delay of up to one image's labelling time (from
the reference run), so kills land mid-image and mid-write at random.
After every kill the session must open (session.json never half-written) and every image it
calls done must have a readable label map; at the end every label map must equal the
reference's pixel for pixel, and the prompts must be the same.

The test suite runs this with 3 kills on a subset (tests/reliability/test_fault_kill.py); this
script runs 20 kills on all 38 images and writes JSON:

  python benchmarks/stress_kill_annotate.py [--kills 20] [--limit 0] [--seed 0]
         [--out benchmarks/results/stress_kill_annotate.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HIRISE_VALID = Path(os.environ.get("MARSAM_SHARED_DATA", REPO.parent / "shared" / "data")) / "hirise-pits" / "valid"


def subset(work: Path, limit: int = 0) -> tuple[Path, Path]:
    """Symlinks to the first ``limit`` valid images (all when 0) and their YOLO boxes."""
    from segmodels.images import list_images
    images, labels = work / "images", work / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    paths = list_images(HIRISE_VALID / "images")
    for p in paths[:limit] if limit else paths:
        (images / p.name).symlink_to(p)
        lab = HIRISE_VALID / "labels" / f"{p.stem}.txt"
        if lab.exists():
            (labels / lab.name).symlink_to(lab)
    return images, labels


def _annotate(images: Path, labels: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "segmodels.cli", "annotate", "--images", str(images),
                             "--boxes", str(labels), "--format", "yolo", "--out", str(out), "--engine", "grabcut",
                             "--labels", "hirise-pits", "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _check_state(out: Path) -> int:
    """The session after a kill: it opens and each done image has a readable label map; returns #done."""
    from annotate.session import Session
    if not (out / "session.json").exists():
        return 0
    s = Session.open(out)
    for p in s.labelled_images():
        lm = s.label_map(p)
        assert lm is not None and lm.ndim == 2, f"{p.name} is done but its label map is missing"
    return s.counts()["done"]


def kill_and_resume(images: Path, labels: Path, work: Path, kills: int, seed: int = 0) -> dict:
    from annotate.session import Session
    def timed_run(out: Path) -> float:
        t0 = time.perf_counter()
        proc = _annotate(images, labels, out)
        _, err = proc.communicate()
        assert proc.returncode == 0, err.decode()
        return time.perf_counter() - t0
    t_ref = timed_run(work / "reference")
    t_start = timed_run(work / "reference")          # everything done: start-up, box reading, skipping
    n = len(list((work / "reference" / "labels").glob("*.png")))
    per_image = max(t_ref - t_start, 1.0) / max(n, 1)
    rng = random.Random(seed)
    out = work / "killed"
    moments, done_after = [], []

    def labelled() -> int:
        return len(list((out / "labels").glob("*.png"))) if (out / "labels").is_dir() else 0
    for k in range(kills):
        before = labelled()
        remaining_kills = kills - k
        # a share of what is left, so the kills spread over the whole batch
        step = max(1, round(rng.uniform(0.5, 1.5) * (n - before) / (remaining_kills + 1)))
        target = min(before + step, n - 1)
        delay = rng.uniform(0.0, per_image)
        t0 = time.perf_counter()
        proc = _annotate(images, labels, out)
        while proc.poll() is None and labelled() < target:
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        moments.append(round(time.perf_counter() - t0, 2))
        done_after.append(_check_state(out))
    last = _annotate(images, labels, out)
    _, err = last.communicate()
    assert last.returncode == 0, err.decode()
    a, b = Session.open(work / "reference"), Session.open(out)
    differing, compared = [], 0
    assert [p.name for p in a.image_paths] == [p.name for p in b.image_paths]
    for i, p in enumerate(a.image_paths):
        assert a.status(i) == b.status(i), (p.name, a.status(i), b.status(i))
        assert [q.to_dict() for q in a.prompts(i)] == [q.to_dict() for q in b.prompts(i)]
        la, lb = a.label_map(i), b.label_map(i)
        if la is None and lb is None:
            continue
        compared += 1
        if la is None or lb is None or not np.array_equal(la, lb):
            differing.append(p.name)
    return {"images": len(a.image_paths), "labelled_compared": compared, "kills": kills,
            "kill_moments_s": moments, "done_after_each_kill": done_after,
            "kills_mid_batch": sum(0 < d < len(a.image_paths) for d in done_after),
            "reference_wall_s": round(t_ref, 1), "startup_wall_s": round(t_start, 1),
            "differing_label_maps": differing}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--limit", type=int, default=0, help="first N valid images (0 = all 38)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "stress_kill_annotate.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = subset(Path(tmp), args.limit)
        result = kill_and_resume(images, labels, Path(tmp), args.kills, args.seed)
    result["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                         "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg())}
    from segmodels.atomic import atomic_write_json
    atomic_write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if result["differing_label_maps"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
