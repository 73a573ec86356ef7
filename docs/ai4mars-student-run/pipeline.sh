# The shipped student (issue 11 session), on the 2-core development machine, no GPU, from the repository root.
# 1. train (labels only, 3 epochs of 4200 images at 256 px, 1 thread; wall time in "Runs" above)
marsam train student --config cpu --no-distill \
  --data ../shared/data/ai4mars-msl --size 256 --limit 4200 --val-limit 400 --epochs 3 --batch-size 16 \
  --lr 0.002 --threads 1 --seed 0 \
  --set class_weighting=sqrt --set augment_policy=basic --set ema=0.998 --set student_stem_stride=2 \
  --set max_minutes=100 --set early_stopping=0 --set warmup_epochs=0.5 \
  --out runs/student-cpu
# 2. calibrate on val (temperature folded into the head; the uncalibrated checkpoint is kept)
marsam calibrate --checkpoint runs/student-cpu/best.safetensors --data ../shared/data/ai4mars-msl --split val \
  --out runs/student-cpu/calibrated.safetensors --threads 2
# 3. evaluate on all 1800 val images (original JPEGs, 256 px) and draw the worst images
marsam evaluate --checkpoint runs/student-cpu/calibrated.safetensors --data ../shared/data/ai4mars-msl --split val \
  --size 256 --threads 2 --json runs/card/eval/student.json
# 4. speed side by side with the paper-size teacher trained on the GPU (docs/recipe-study.md)
python benchmarks/bench_distill.py --teacher runs/teacher-gpu/teacher-fp16.safetensors \
  --student runs/student-cpu/calibrated.safetensors --size 256 --threads 1 2 --rounds 5 --decoder-epochs 0 \
  --out runs/card/bench_distill.json
# 5. the card
marsam model-card runs/card distill/pretrained/ai4mars-student.md --name ai4mars-student \
  --figure ../../docs/images/ai4mars-student-worst.png --note-file runs/card/note.md
