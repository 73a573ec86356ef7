#!/usr/bin/env bash
# The follow-up call to train_shipped_v3.sh on the SAME warm machine (its /tmp work folder still
# there), as session 3 ran it (178 s): first the comparison students the first call's time limit
# cut (REDO, default labels-s1: the same 0.7-minute budget), then one longer student with what is
# left of the device time, distilled from pass 3's teacher (KIND=kd-all) or on labels alone
# (KIND=labels), whichever the comparison favoured.
set -u
OUT=${OUT:-/tmp/gpu-out}; W=${W:-/tmp/marsam-gpu}; PY=${PY:-python3}
S_MIN=${S_MIN:-0.7}; S2_MIN=${S2_MIN:-1.4}; KIND=${KIND:-kd-all}; SEED=${SEED:-0}; REDO=${REDO:-labels-s1}
EXTRA=${EXTRA:-}   # e.g. "--size 64 --limit 96 --val-limit 48 --device cpu" after a SMOKE=1 pass 3
mkdir -p "$OUT"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/log.txt"; }
[ -f "$W/runs/teacher/best.safetensors" ] && [ -f "$W/data/split.csv" ] || { log "pass 3's work folder is gone (machine was given back)"; exit 3; }
export PYTHONPATH=$W/site OMP_NUM_THREADS=8
M="$PY -m segmodels.cli"; D=$W/data; cd "$W"
TEACH="--teacher runs/teacher/best.safetensors --set teacher_once=true --set kd_pixels=all"
for r in $REDO; do                       # e.g. labels-s1 or kd-all-s0
  s=${r##*-s}; [ "${r%-s*}" = labels ] && how="--no-distill" || how=$TEACH
  $M train student --config gpu --data $D --epochs 100 --batch-size 32 --lr 0.002 --set max_minutes=$S_MIN \
     --set fit_epochs_to_budget=true $how $EXTRA --seed $s --out runs/$r >runs/$r.log 2>&1
  log "$r: $(tail -1 runs/$r.log)"; cp runs/$r/best.safetensors "$OUT/student-$r.safetensors"
done
[ "$KIND" = kd-all ] && how=$TEACH || how="--no-distill"
log "long-$KIND-s$SEED ($S2_MIN min)"
$M train student --config gpu --data $D --epochs 200 --batch-size 32 --lr 0.002 --set max_minutes=$S2_MIN \
   --set fit_epochs_to_budget=true --seed $SEED $how $EXTRA --out runs/long-$KIND-s$SEED >runs/long-$KIND-s$SEED.log 2>&1
log "long: $(tail -1 runs/long-$KIND-s$SEED.log)"
cp runs/long-$KIND-s$SEED/best.safetensors "$OUT/student-long.safetensors"
find runs -type f \( -name '*.json' -o -name '*.csv' -o -name '*.yaml' -o -name '*.log' \) -print0 \
   | tar --null -czf "$OUT/results2.tgz" -T - 2>/dev/null
log "done"
