"""DDP: the unchanged training command under torchrun with two CPU processes (gloo)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from distill.train_loop import weight_digest
from segmodels import load_checkpoint


def test_two_cpu_ranks_end_with_identical_weights(folder_data, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"data: {folder_data}\nsize: 32\nstudent_base: 4\nepochs: 2\nbatch_size: 2\n"
                   "threads: 1\ndevice: cpu\nval_limit: 2\n")
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "segmodels.cli", "train", "student", "--no-distill", "--config", str(cfg), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # what rank 0 wrote is what both ranks hold, BatchNorm running statistics included
    assert weight_digest(load_checkpoint(out / "last.safetensors").model) == digests[0]
    # each rank saw half the data per epoch: 8 images / 2 ranks / batch 2 -> 2 steps
    assert summary["train_images"] == 8
