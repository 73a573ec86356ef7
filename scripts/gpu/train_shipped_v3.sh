#!/usr/bin/env bash
# Third GPU pass (session 3; about 9.5 minutes on one H200, one process at a time):
#   1. the Attention U-Net teacher at the paper's size (256 px, base 64, all 4200 train images)
#      with the `gpu` profile (which holds the recipe study's winners), epochs fitted to $T_MIN
#      minutes; evaluated on all 1800 val images; sent back in float16, split under 16 MiB
#   2. four students of the shipped architecture, one after another, the same budget each:
#      distilled (KD on all image pixels, teacher logits once) and labels only, seeds 0 and 1:
#      the distilled-vs-labels-only comparison of the model card, and the shipped candidate
# Calibration, evaluation at 256 px and the card are done afterwards on the CPU.
# Results are copied to $OUT after every stage (a machine can be taken back mid-run).
#   G=out/gpu  (ai4mars.{webpblob,index.json,masks.npz} from pack_data.py, whl/*.whl); marsam is
#   installed from the repository the command runs in (SRC, default: the current folder)
# SMOKE=1 runs the same stages tiny on the CPU, to check the script before spending GPU time.
set -u
G=${G:-out/gpu}; OUT=${OUT:-/tmp/gpu-out}; W=${W:-/tmp/marsam-gpu}; PY=${PY:-python3}; SMOKE=${SMOKE:-0}
T_MIN=${T_MIN:-3.5}; S_MIN=${S_MIN:-0.7}
if [ "$SMOKE" = 1 ]; then
    T_ARGS="--size 64 --limit 96 --val-limit 48 --epochs 2 --batch-size 16 --teacher-base 8 --device cpu"
    S_ARGS="--size 64 --limit 96 --val-limit 48 --epochs 2 --batch-size 16 --device cpu"
    E_ARGS="--limit 48 --device cpu"
else
    T_ARGS="--epochs 60 --batch-size 32 --lr 0.001"
    S_ARGS="--epochs 100 --batch-size 32 --lr 0.002"
    E_ARGS=""
fi
mkdir -p "$OUT" "$W"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/log.txt"; }
pack() { (cd "$W" && find runs -type f \( -name '*.json' -o -name '*.md' -o -name '*.csv' -o -name '*.yaml' \
        -o -name '*.png' -o -name '*.log' \) -print0 | tar --null -czf "$OUT/results.tgz" -T - 2>/dev/null); }
log "setup"
SRC=${SRC:-$PWD}
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$W/site" "$G"/whl/*.whl >>"$OUT/log.txt" 2>&1
$PY -m pip install -q --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$W/site" "$SRC" >>"$OUT/log.txt" 2>&1 \
    || { log "marsam install failed"; exit 1; }
export PYTHONPATH=$W/site OMP_NUM_THREADS=8
M="$PY -m segmodels.cli"; D=$W/data
[ -f "$D/split.csv" ] || $PY "$SRC/scripts/gpu/unpack_data.py" "$G/ai4mars" "$D" >>"$OUT/log.txt" 2>&1 || { log "unpack failed"; exit 1; }
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee -a "$OUT/log.txt"
mkdir -p "$W/runs/eval"; cd "$W"

log "teacher"
$M train teacher --config gpu --data "$D" $T_ARGS --set max_minutes=$T_MIN --set fit_epochs_to_budget=true \
    --out runs/teacher >runs/teacher.log 2>&1
log "teacher rc=$? $(tail -1 runs/teacher.log)"; pack
TEACHER=runs/teacher/best.safetensors
$M evaluate --checkpoint $TEACHER --data "$D" --split val $E_ARGS --no-speed --worst 0 --json runs/eval/teacher.json \
    >runs/eval-teacher.log 2>&1
log "eval teacher: $(grep -i miou runs/eval-teacher.log | head -1)"; pack
# the teacher comes back in float16, split under the 16 MiB per-file limit (cat the parts to rejoin)
$PY - <<EOF >>"$OUT/log.txt" 2>&1
from safetensors import safe_open
from safetensors.torch import save_file
with safe_open("$TEACHER", "pt") as f:
    meta = f.metadata(); t = {k: (f.get_tensor(k).half() if f.get_tensor(k).is_floating_point() else f.get_tensor(k)) for k in f.keys()}
save_file(t, "runs/teacher-fp16.safetensors", metadata=meta)
EOF
split -b 15M -d runs/teacher-fp16.safetensors "$OUT/teacher-fp16.part"

S="--config gpu --data $D $S_ARGS --set max_minutes=$S_MIN --set fit_epochs_to_budget=true"
for seed in 0 1; do
  log "kd-all-s$seed"
  $M train student $S --teacher $TEACHER --set teacher_once=true --set kd_pixels=all --seed $seed \
      --out runs/kd-all-s$seed >runs/kd-all-s$seed.log 2>&1
  log "kd-all-s$seed: $(tail -1 runs/kd-all-s$seed.log)"
  cp runs/kd-all-s$seed/best.safetensors "$OUT/student-kd-all-s$seed.safetensors"; pack
  log "labels-s$seed"
  $M train student $S --no-distill --seed $seed --out runs/labels-s$seed >runs/labels-s$seed.log 2>&1
  log "labels-s$seed: $(tail -1 runs/labels-s$seed.log)"
  cp runs/labels-s$seed/best.safetensors "$OUT/student-labels-s$seed.safetensors"; pack
done
pack; log "done"
