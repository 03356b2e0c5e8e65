#!/usr/bin/env bash
# The demo alignment run on the embedded tiny model, from scratch on CPU in a few minutes:
#   1. SFT on demo-sft: the model learns the task format, but answers helpfully only about half the time;
#   2. DPO on demo-pref from the SFT model: held-out preference accuracy goes from chance (0.5) to >= 0.9.
# Outputs land in output/demo/<time>/{sft,<type>}; each holds weights, args.json, metrics.jsonl and curves.png.
# RLHF_TYPE=kto|cpo|simpo|orpo|rm|prm|alright|maxright|mix bash scripts/demo.sh runs step 2 with that algorithm.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
OUT=${OUT:-output/demo/$(date +%Y%m%d-%H%M%S)}
rlhfx sft --model tiny --dataset demo-sft --train_type full --num_train_epochs 3 --batch_size 16 \
  --learning_rate 3e-3 --warmup_ratio 0.05 --logging_steps 20 --save_steps 1000 --output_dir "$OUT/sft"
RLHF_TYPE=${RLHF_TYPE:-dpo}
case "$RLHF_TYPE" in
  prm) DATA=(--dataset demo-prm) ;;
  alright|maxright|mix) DATA=(--dataset demo-pref --sft_dataset demo-sft) ;;
  *) DATA=(--dataset demo-pref) ;;  # kto reads the pairs as desirable/undesirable rows
esac
rlhfx rlhf --rlhf_type "$RLHF_TYPE" --model "$OUT/sft" "${DATA[@]}" --train_type full \
  --num_train_epochs 1 --batch_size 16 --learning_rate 5e-4 --logging_steps 10 --eval_steps 25 --save_steps 1000 \
  --output_dir "$OUT/$RLHF_TYPE"
echo "demo finished: $OUT/$RLHF_TYPE/curves.png shows the curves; $OUT/$RLHF_TYPE/summary.json the held-out numbers"
