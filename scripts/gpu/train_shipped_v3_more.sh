#!/usr/bin/env bash
# Follow-up call to train_shipped_v3.sh on the SAME warm machine (its /tmp work folder still there):
# one longer student with what is left of the device time, distilled from pass 3's teacher
# (KIND=kd-all) or on labels alone (KIND=labels), whichever the four-run comparison favoured.
set -u
OUT=${OUT:-/tmp/gpu-out}; W=${W:-/tmp/marsam-gpu}; PY=${PY:-python3}
S2_MIN=${S2_MIN:-2.5}; KIND=${KIND:-kd-all}; SEED=${SEED:-0}
mkdir -p "$OUT"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/log.txt"; }
[ -f "$W/runs/teacher/best.safetensors" ] && [ -f "$W/data/split.csv" ] || { log "pass 3's work folder is gone (machine was given back)"; exit 3; }
export PYTHONPATH=$W/site OMP_NUM_THREADS=8
M="$PY -m segmodels.cli"; D=$W/data; cd "$W"
S="--config gpu --data $D --epochs 200 --batch-size 32 --lr 0.002 --set max_minutes=$S2_MIN --set fit_epochs_to_budget=true --seed $SEED"
if [ "$KIND" = kd-all ]; then
  S="$S --teacher runs/teacher/best.safetensors --set teacher_once=true --set kd_pixels=all"
else
  S="$S --no-distill"
fi
log "long-$KIND-s$SEED ($S2_MIN min)"
$M train student $S --out runs/long-$KIND-s$SEED >runs/long-$KIND-s$SEED.log 2>&1
log "long: $(tail -1 runs/long-$KIND-s$SEED.log)"
cp runs/long-$KIND-s$SEED/best.safetensors "$OUT/student-long.safetensors"
(cd "$W" && find runs/long-$KIND-s$SEED -type f \( -name '*.json' -o -name '*.csv' -o -name '*.yaml' -o -name '*.log' \) -print0 \
   | tar --null -czf "$OUT/results-long.tgz" -T - 2>/dev/null)
log "done"
