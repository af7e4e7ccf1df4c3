#!/usr/bin/env bash
# Issue #38 item 3's figure: NIPS4B, 5 folds, pooled out-of-fold macro / micro AP over the 550 clips, in one run on
# the same folds (benchmarks/nips4b.py's split, seed 0):
#   finetuned  birdsed's head and BirdNET V2.4's torch port trained together from audio (model.freeze_backbone=false)
#   frozen     the head on cached BirdNET embeddings (the birdnet preset), with the logistic-regression anchor
#              (--baseline) fitted on the same folds
# Meant for a GPU (a fine-tuning step of 32 crops runs about 100 forward+backward passes of BirdNET: minutes on a
# 2-core CPU); benchmarks/gpu_finetune.sh runs the fine-tuned levers on the `device` tool's GPU machine. Each recipe writes
# $OUT/<name>/nips4b.json (per fold: AP, F1, train_s; summary.pooled: the pooled APs) and its log.
#
#   bash benchmarks/nips4b_birdnet_finetune.sh                       # DATA=../shared/data/nips4b OUT=bench-out/...
#   EPOCHS=30 LR_SCALE=0.01 bash benchmarks/nips4b_birdnet_finetune.sh   # the levers: epochs, backbone lr factor
#
# SMOKE=1 runs the fine-tuned recipe alone on fold 0 for one step of two 3 s crops (tests/test_nips4b_bench.py).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-python}
DATA=${DATA:-$HERE/../../shared/data/nips4b}
OUT=${OUT:-bench-out/nips4b-birdnet-finetune}
EPOCHS=${EPOCHS:-20}
LR_SCALE=${LR_SCALE:-0.03}  # train.backbone_lr_scale's default, the best measured (docs/BENCHMARKS.md)
BATCH=${BATCH:-32}
DEVICE=${DEVICE:-auto}
mkdir -p "$OUT"
FT=(--config birdnet --set model.freeze_backbone=false --set "train.epochs=$EPOCHS" --set "train.backbone_lr_scale=$LR_SCALE"
    --set "train.batch_size=$BATCH" --set "train.device=$DEVICE")
if [[ "${SMOKE:-0}" == 1 ]]; then
  "$PY" "$HERE/nips4b.py" --data "$DATA" --out "$OUT/finetuned" --only-folds 0 "${FT[@]}" \
    --set train.max_steps=1 --set train.batch_size=2 --set data.crop_s=3.0 --set model.embed_hop_s=3.0 \
    2>&1 | tee "$OUT/finetuned.log"
  exit 0
fi
"$PY" "$HERE/nips4b.py" --data "$DATA" --out "$OUT/frozen" --config birdnet --baseline 2>&1 | tee "$OUT/frozen.log"
"$PY" "$HERE/nips4b.py" --data "$DATA" --out "$OUT/finetuned" "${FT[@]}" 2>&1 | tee "$OUT/finetuned.log"
for name in frozen finetuned; do
  "$PY" -c "import json, sys; s = json.load(open(sys.argv[1]))['summary']; print(sys.argv[2], 'pooled', s['pooled'])" \
    "$OUT/$name/nips4b.json" "$name"
done
