#!/usr/bin/env bash
# Issue 16's benchmarks, one after the other, on an otherwise idle machine (each JSON records the
# load average): decoder and prediction costs without napari (float32 vs bf16, 1 and 2 threads),
# then the napari loop (train-and-suggest, prediction + entropy layer, Qt stalls) and the annotator
# (box -> painted labels, stalls while embedding and boxing) under Xvfb.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
XVFB="xvfb-run -a -s '-screen 0 1600x1000x24'"
$PY benchmarks/bench_interactive_cpu.py --threads 1 2 --epochs 100 --old-epochs 0 --repeats 5 --loss-sizes
eval "$XVFB $PY benchmarks/bench_napari_loop.py --epochs 100 --old-epochs 0 --images 5 --repeats 5"
eval "$XVFB $PY benchmarks/bench_napari_annotator.py --boxes 20"
