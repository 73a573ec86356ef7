# The paper-size teacher of session 3 (20 epochs on one H200, on WebP q80 copies of the training
# images: docs/ai4mars-student-run/pipeline.sh) fine-tuned for 2 epochs on the ORIGINAL training
# JPEGs on the 2-core development machine (session 4, issue 11), bf16 autocast on this CPU's
# AVX512-BF16 (train_cpu_bf16), then evaluated in float32 on all 1800 original val JPEGs.
# T = the GPU run's teacher weights (float16 as sent back; loaded into float32).
set -eu
T=${T:-/work/runs-s3/gpu/teacher-fp16.safetensors}; R=${R:-/work/runs-s4}; DATA=../shared/data/ai4mars-msl
M=".venv/bin/marsam"
$M train teacher --config cpu --data $DATA --size 256 --teacher-base 64 --set limit=null --set val_limit=400 \
   --epochs 2 --batch-size 8 --lr 2e-4 --threads 2 --init $T --set train_cpu_bf16=true --set warmup_epochs=0.1 \
   --set max_minutes=88 --set early_stopping=0 --out $R/teacher-ft
$M evaluate --checkpoint $R/teacher-ft/best.safetensors --data $DATA --split val --size 256 --threads 2 \
   --no-speed --worst 0 --json $R/teacher-ft-eval.json
