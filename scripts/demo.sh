#!/usr/bin/env bash
# The demo alignment run on the embedded tiny model, from scratch on CPU in a few minutes:
#   1. SFT on demo-sft: the model learns the task format, but answers helpfully only about half the time;
#   2. DPO on demo-pref from the SFT model: held-out preference accuracy goes from chance (0.5) to >= 0.9.
# Outputs land in output/demo/{sft,dpo}; each holds weights, args.json, metrics.jsonl and curves.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
OUT=${OUT:-output/demo/$(date +%Y%m%d-%H%M%S)}
rlhfx sft --model tiny --dataset demo-sft --train_type full --num_train_epochs 3 --batch_size 16 \
  --learning_rate 3e-3 --warmup_ratio 0.05 --logging_steps 20 --save_steps 1000 --output_dir "$OUT/sft"
rlhfx rlhf --rlhf_type dpo --model "$OUT/sft" --dataset demo-pref --train_type full --beta 0.1 \
  --num_train_epochs 1 --batch_size 16 --learning_rate 5e-4 --logging_steps 10 --eval_steps 25 --save_steps 1000 \
  --output_dir "$OUT/dpo"
echo "demo finished: $OUT/dpo/curves.png shows the DPO curves; $OUT/dpo/summary.json the held-out numbers"
