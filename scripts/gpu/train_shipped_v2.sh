#!/usr/bin/env bash
# Second GPU pass (about 5 minutes on one H200), after the first showed that parallel processes on
# one GPU starve each other (8 study runs and 5 students at once, 16 torch threads each): one process
# at a time. Teacher (paper size, budget-fitted epochs), then four students one after another
# (distilled with KD on all image pixels and labels only, seeds 0 and 1), then calibration and
# evaluation of the distilled seed-0 student run on the CPU afterwards (marsam calibrate / evaluate). Results go to $OUT after every stage.
set -u
G=${G:-out/gpu}; OUT=${OUT:-/tmp/gpu-out}; W=${W:-/tmp/marsam-gpu}; PY=${PY:-python3}
T_MIN=${T_MIN:-1.75}; S_MIN=${S_MIN:-0.38}
mkdir -p "$OUT" "$W"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/log.txt"; }
pack() { (cd "$W" && find runs -type f \( -name '*.json' -o -name '*.md' -o -name '*.csv' -o -name '*.yaml' \
        -o -name '*.png' -o -name '*.log' \) -print0 | tar --null -czf "$OUT/results.tgz" -T - 2>/dev/null); }
log "setup"
SRC=$W/src; rm -rf "$SRC" && mkdir -p "$SRC" && tar -xf "$G/marsam-src.tar" -C "$SRC"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$W/site" "$G"/whl/*.whl >>"$OUT/log.txt" 2>&1
$PY -m pip install -q --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$W/site" "$SRC" >>"$OUT/log.txt" 2>&1 || { log "install failed"; exit 1; }
export PYTHONPATH=$W/site OMP_NUM_THREADS=8
M="$PY -m segmodels.cli"; D=$W/data
[ -f "$D/split.csv" ] || $PY "$SRC/scripts/gpu/unpack_data.py" "$G/ai4mars" "$D" >>"$OUT/log.txt" 2>&1
mkdir -p "$W/runs/eval"; cd "$W"
R="--set class_weighting=sqrt"
log "teacher"
$M train teacher --config gpu --data "$D" --epochs 60 --batch-size 32 $R --set max_minutes=$T_MIN \
    --set fit_epochs_to_budget=true --out runs/teacher >runs/teacher.log 2>&1
log "teacher rc=$? $(tail -1 runs/teacher.log)"; pack
S="--config gpu --data $D --epochs 100 --batch-size 64 --lr 0.002 $R --set augment_policy=strong --set ema=0.995 --set student_stem_stride=2 --set max_minutes=$S_MIN --set fit_epochs_to_budget=true"
for seed in 0 1; do
  $M train student $S --teacher runs/teacher/best.safetensors --set teacher_once=true --set kd_pixels=all --seed $seed --out runs/kd-all-s$seed >runs/kd-all-s$seed.log 2>&1
  log "kd-all-s$seed: $(tail -1 runs/kd-all-s$seed.log)"; pack
  [ $seed = 0 ] && cp runs/kd-all-s0/best.safetensors "$OUT/student-uncalibrated.safetensors"
  $M train student $S --no-distill --seed $seed --out runs/labels-s$seed >runs/labels-s$seed.log 2>&1
  log "labels-s$seed: $(tail -1 runs/labels-s$seed.log)"; pack
  [ $seed = 0 ] && cp runs/labels-s0/best.safetensors "$OUT/student-labels-only.safetensors"
done
pack; log "done"
