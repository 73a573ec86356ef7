#!/usr/bin/env bash
# Train the shipped AI4Mars models on one GPU in one pass (about 9 minutes on one H200):
#   1. the recipe study (distill/recipe.py): 15 label-only student variants at 128 px on a fixed
#      1000-image subset, 8 at a time; the winners become recipe.yaml
#   2. the Attention U-Net teacher at the paper's size (256 px, base 64, all 4200 train images)
#      with the recipe, its epochs fitted to a wall-clock budget
#   3. five students in parallel: distilled with KD on all image pixels (seeds 0, 1), distilled
#      with KD on labelled pixels only (seed 0), labels only (seeds 0, 1)
#   4. the better distilled student calibrated (temperature on val) and evaluated
#   5. the training-throughput benchmark (first-release data path vs device batches)
# Results are copied to $OUT after every stage (a machine can be taken back mid-run).
#
# Data travels packed (scripts/gpu/pack_data.py); the code as a tarball of the branch; wheels for
# the packages the GPU machine lacks:
#   G=out/gpu  (ai4mars.{webpblob,index.json,masks.npz}, whl/*.whl, marsam-src.tar)
# SMOKE=1 runs the same stages tiny on the CPU, to check the script before spending GPU time.
set -u
G=${G:-out/gpu}
OUT=${OUT:-/tmp/gpu-out}
W=${W:-/tmp/marsam-gpu}
SMOKE=${SMOKE:-0}
PY=${PY:-python3}
mkdir -p "$OUT" "$W"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/log.txt"; }

if [ "$SMOKE" = 1 ]; then
    STUDY_ARGS="--size 64 --limit 64 --val-limit 48 --epochs 2 --batch-size 16 --parallel 2 --device cpu"
    TEACHER_ARGS="--size 64 --limit 96 --val-limit 48 --epochs 2 --batch-size 16 --teacher-base 8 --device cpu"
    STUDENT_ARGS="--size 64 --limit 96 --val-limit 48 --epochs 3 --batch-size 16 --device cpu"
    T_MIN=1.5; S_MIN=1.0; STUDY_T=300; BENCH="--size 64 --limit 64 --base 8 --steps 2 --rounds 1 --device cpu --workers 0"
else
    STUDY_ARGS="--size 128 --limit 1000 --epochs 10 --batch-size 32 --parallel 8"
    TEACHER_ARGS="--epochs 60 --batch-size 32 --lr 0.001"
    STUDENT_ARGS="--epochs 100 --batch-size 32"
    T_MIN=2.5; S_MIN=1.9; STUDY_T=95; BENCH="--size 256 --limit 512 --batch-size 64 --steps 8 --rounds 2 --workers 8"
fi

pack() {   # small result files (no checkpoints) into one archive in $OUT
    (cd "$W" && find runs -type f \( -name '*.json' -o -name '*.md' -o -name '*.csv' -o -name '*.yaml' \
        -o -name '*.png' -o -name '*.log' \) -print0 | tar --null -czf "$OUT/results.tgz" -T - 2>/dev/null)
}

log "setup"
SRC=$W/src
rm -rf "$SRC" && mkdir -p "$SRC" && tar -xf "$G/marsam-src.tar" -C "$SRC" || { log "no source tarball"; exit 1; }
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$W/site" "$G"/whl/*.whl >>"$OUT/log.txt" 2>&1
$PY -m pip install -q --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$W/site" "$SRC" >>"$OUT/log.txt" 2>&1 \
    || { log "marsam install failed"; exit 1; }
export PYTHONPATH=$W/site
M="$PY -m segmodels.cli"
D=$W/data
[ -f "$D/split.csv" ] || $PY "$SRC/scripts/gpu/unpack_data.py" "$G/ai4mars" "$D" >>"$OUT/log.txt" 2>&1 || { log "unpack failed"; exit 1; }
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee -a "$OUT/log.txt"
mkdir -p "$W/runs/eval" "$W/runs/bench"
cd "$W"

log "stage 1: recipe study"
timeout $STUDY_T $M experiment recipe --config gpu --data "$D" $STUDY_ARGS --out runs/study >runs/study.log 2>&1
log "study rc=$? $(tail -3 runs/study.log | tr '\n' ' ')"
pkill -f "multiprocessing.spawn" 2>/dev/null   # workers of an interrupted study
pack
RECIPE=runs/study/recipe.yaml
[ -f $RECIPE ] || echo "{}" > $RECIPE
SETS=$($PY -c "import yaml,sys; d=yaml.safe_load(open('$RECIPE')) or {}; print(' '.join(f'--set {k}={v}' for k, v in d.items() if not k.startswith('student_')))")
SSETS=$($PY -c "import yaml,sys; d=yaml.safe_load(open('$RECIPE')) or {}; print(' '.join(f'--set {k}={v}' for k, v in d.items() if k.startswith('student_')))")
[ -n "$SSETS" ] || SSETS="--set student_stem_stride=2"   # the speed target needs the strided stem
log "recipe: $SETS | student: $SSETS"

log "stage 2: teacher"
$M train teacher --config gpu --data "$D" $TEACHER_ARGS $SETS --set max_minutes=$T_MIN \
    --set fit_epochs_to_budget=true --out runs/teacher >runs/teacher.log 2>&1
log "teacher rc=$? $(tail -2 runs/teacher.log | tr '\n' ' ')"
pack
TEACHER=runs/teacher/best.safetensors
[ -f $TEACHER ] || { log "no teacher"; exit 1; }

log "stage 3: students"
COMMON="--config gpu --data $D $STUDENT_ARGS $SETS $SSETS --set max_minutes=$S_MIN --set fit_epochs_to_budget=true"
$M train student $COMMON --teacher $TEACHER --set teacher_once=true --set kd_pixels=all --seed 0 --out runs/kd-all-s0 >runs/kd-all-s0.log 2>&1 &
$M train student $COMMON --teacher $TEACHER --set teacher_once=true --set kd_pixels=all --seed 1 --out runs/kd-all-s1 >runs/kd-all-s1.log 2>&1 &
$M train student $COMMON --teacher $TEACHER --set teacher_once=true --set kd_pixels=labelled --seed 0 --out runs/kd-lab-s0 >runs/kd-lab-s0.log 2>&1 &
$M train student $COMMON --no-distill --seed 0 --out runs/labels-s0 >runs/labels-s0.log 2>&1 &
$M train student $COMMON --no-distill --seed 1 --out runs/labels-s1 >runs/labels-s1.log 2>&1 &
wait
for r in kd-all-s0 kd-all-s1 kd-lab-s0 labels-s0 labels-s1; do log "$r: $(tail -1 runs/$r.log)"; done
pack

log "stage 4: choose, calibrate, evaluate"
BEST=$($PY - <<'EOF'
import json
best, score = None, -1
for r in ("kd-all-s0", "kd-lab-s0"):
    try:
        s = json.load(open(f"runs/{r}/summary.json"))["best_val_miou"] or -1
    except Exception:
        continue
    if s > score:
        best, score = r, s
print(best or "")
EOF
)
log "shipped student from: $BEST"
if [ -n "$BEST" ]; then
    cp runs/$BEST/best.safetensors "$OUT/student-uncalibrated.safetensors"
    $M calibrate --checkpoint runs/$BEST/best.safetensors --data "$D" --split val --out runs/student-calibrated.safetensors >runs/calibrate.log 2>&1
    log "calibrate: $(tail -1 runs/calibrate.log)"
    [ -f runs/student-calibrated.safetensors ] && cp runs/student-calibrated.safetensors "$OUT/student.safetensors"
    $M evaluate --checkpoint runs/student-calibrated.safetensors --data "$D" --split val --json runs/eval/student.json >runs/eval-student.log 2>&1
    log "eval student: $(grep mIoU runs/eval-student.log | tail -1)"
fi
$M evaluate --checkpoint $TEACHER --data "$D" --split val --json runs/eval/teacher.json --no-speed >runs/eval-teacher.log 2>&1
log "eval teacher: $(grep mIoU runs/eval-teacher.log | tail -1)"
pack
# the teacher comes back in float16, split under the 16 MiB per-file limit
$PY - <<EOF >>"$OUT/log.txt" 2>&1
import json
from safetensors import safe_open
from safetensors.torch import save_file
with safe_open("$TEACHER", "pt") as f:
    meta = f.metadata(); t = {k: (f.get_tensor(k).half() if f.get_tensor(k).is_floating_point() else f.get_tensor(k)) for k in f.keys()}
save_file(t, "runs/teacher-fp16.safetensors", metadata=meta)
EOF
split -b 15M -d runs/teacher-fp16.safetensors "$OUT/teacher-fp16.part"

log "stage 5: throughput benchmark"
timeout 55 $PY "$SRC/benchmarks/bench_train_throughput.py" --data "$D" $BENCH --json runs/bench/train_throughput.json >runs/bench.log 2>&1
log "bench rc=$? $(grep -E 'speedup|images_per_second' runs/bench.log | tr '\n' ' ')"
pack
log "done"
