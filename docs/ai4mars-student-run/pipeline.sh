# The shipped student (issue 11, session 3). GPU part: one H200, `scripts/gpu/train_shipped_v3.sh`
# (data packed by scripts/gpu/pack_data.py, carried as out/gpu), then a follow-up call on the same
# warm machine (the labels-only seed 1 cut by the first call's time limit, and the long student):
#   teacher:   marsam train teacher --config gpu --data $D --epochs 60 --batch-size 32 --lr 0.001 \
#                --set max_minutes=3.5 --set fit_epochs_to_budget=true --out runs/teacher
#   students (seeds 0 and 1, the same 0.7-minute budget each):
#     marsam train student --config gpu --data $D --epochs 100 --batch-size 32 --lr 0.002 \
#       --set max_minutes=0.7 --set fit_epochs_to_budget=true --teacher runs/teacher/best.safetensors \
#       --set teacher_once=true --set kd_pixels=all --seed $S --out runs/kd-all-s$S
#     marsam train student ...same... --no-distill --seed $S --out runs/labels-s$S
#   shipped (1.4 minutes):
#     marsam train student --config gpu --data $D --epochs 200 --batch-size 32 --lr 0.002 \
#       --set max_minutes=1.4 --set fit_epochs_to_budget=true --seed 0 \
#       --teacher runs/teacher/best.safetensors --set teacher_once=true --set kd_pixels=all --out runs/long-kd-s0
#   teacher evaluation (on the GPU, val images re-encoded as WebP q80 by the data pack):
#     marsam evaluate --checkpoint runs/teacher/best.safetensors --data $D --split val --no-speed --worst 0 \
#       --json runs/eval/teacher.json     (kept as eval/teacher-gpu-webp.json)
# CPU part (2-core development machine), from the repository root; G = the files the GPU sent back,
# R = the card folder (student/, teacher/: the runs' config.yaml, history.csv, summary.json):
set -eu
G=${G:-/work/runs-s3/gpu}; R=${R:-/work/runs-s3/card}; DATA=../shared/data/ai4mars-msl
M=".venv/bin/marsam"
# 1. the two-seed comparison, on the original val JPEGs at 256 px
[ -f $R/eval/seeds/labels-s1.json ] || for s in 0 1; do
  $M evaluate --checkpoint $G/student-kd-all-s$s.safetensors --data $DATA --split val --size 256 --threads 2 \
     --no-speed --worst 0 --json $R/eval/seeds/distilled-s$s.json
  $M evaluate --checkpoint $G/student-labels-s$s.safetensors --data $DATA --split val --size 256 --threads 2 \
     --no-speed --worst 0 --json $R/eval/seeds/labels-s$s.json
done
# 1b. the long student as the GPU trained it, on the same JPEGs, before calibration
[ -f $R/eval/student-gpu-as-trained.json ] || $M evaluate --checkpoint $G/student-long.safetensors --data $DATA \
   --split val --size 256 --threads 2 --no-speed --worst 0 --json $R/eval/student-gpu-as-trained.json
# (The GPU saw the images re-encoded as WebP q80, for the 64 MB transfer limit. The short
#  comparison students lose about 0.04 val mIoU on the original JPEGs, e.g. distilled seed 0 on the
#  first 400 val images 0.6734 WebP vs 0.6351 JPEG; the long student does not: 0.7311 on the WebP
#  val images (its GPU history) vs 0.7343 on the JPEGs (1b). So it ships as the GPU trained it.)
# 2. calibrate the shipped student on val (temperature folded into the head; kept at 1 if ECE would rise)
$M calibrate --checkpoint $G/student-long.safetensors --data $DATA --split val --threads 2 \
   --out $R/student-calibrated.safetensors
# 3. evaluate it on all 1800 val images at 256 px and draw the worst ones
$M evaluate --checkpoint $R/student-calibrated.safetensors --data $DATA --split val --size 256 --threads 2 \
   --json $R/eval/student.json
# 4. speed side by side with the paper-size teacher
.venv/bin/python benchmarks/bench_distill.py --teacher $G/teacher-fp16.safetensors \
   --student $R/student-calibrated.safetensors --size 256 --threads 1 2 --rounds 5 --decoder-epochs 0 \
   --out $R/bench_distill.json
# 5. the teacher on the same original JPEGs (float16 weights sent back by the GPU, run in float32)
$M evaluate --checkpoint $G/teacher-fp16.safetensors --data $DATA --split val --size 256 --threads 2 \
   --no-speed --worst 0 --json $R/eval/teacher.json
echo CARD-INPUTS-DONE
