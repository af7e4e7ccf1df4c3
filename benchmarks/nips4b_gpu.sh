#!/usr/bin/env bash
# NIPS4B 5-fold runs of several recipes side by side on one GPU, for the `device` tool. The data (59 MB)
# and the wheels (19 MB) do not fit one call's 64 MiB, so the data travels in two halves over two calls
# made back to back (the machine keeps /tmp while it stays warm):
#
#   bash benchmarks/nips4b_gpu.sh split                                   # here: .gpu/a, .gpu/b
#   run(command="bash benchmarks/nips4b_gpu.sh stage", carry=[".whl", ".gpu/a"], timeout_s=120)
#   run(command="bash benchmarks/nips4b_gpu.sh run", carry=[".gpu/b"], timeout_s=500)
#   run(command="ROUND=2 DEADLINE=300 bash benchmarks/nips4b_gpu.sh run", timeout_s=340)   # if time is left
#
# `run` starts every recipe in RECIPES at once (5 processes share the GPU and 16 cores), stops them at
# DEADLINE seconds, and packs each one's log, nips4b.json and per-fold predictions into $OUT/<name>.tgz;
# benchmarks/nips4b_ensemble.py then scores them and their mean. Checked here on the CPU with
#
#   DATA=../shared/data/nips4b SMOKE=1 DEADLINE=300 OUT=/tmp/gpu-smoke bash benchmarks/nips4b_gpu.sh run
set -uo pipefail
OUT=${OUT:-bench-out/nips4b-gpu}
DATA=${DATA:-/tmp/nips4b}
DEADLINE=${DEADLINE:-420}
WORK=${WORK:-/tmp/nips4b-runs}
ROUND=${ROUND:-1}  # 2: the second round, made on the same warm machine (DEADLINE=300): seeds of ep40_spec, ep40 alone
RECIPES=(
  "preset|"
  "seed1|--set train.seed=1"
  "ep40_spec|--set train.epochs=40 --set augment.specaug_p=0.5"
  "scale3|--set model.freq_scale=3 --set model.time_scale=3"
  "scale3_ep40_spec|--set model.freq_scale=3 --set model.time_scale=3 --set train.epochs=40 --set augment.specaug_p=0.5"
)
[ "$ROUND" = 2 ] && RECIPES=(
  "ep40_spec_seed1|--set train.epochs=40 --set augment.specaug_p=0.5 --set train.seed=1"
  "ep40_spec_seed2|--set train.epochs=40 --set augment.specaug_p=0.5 --set train.seed=2"
  "ep40|--set train.epochs=40"
)

case "${1:-}" in
split)  # the data in two halves of about 40 and 19 MB (labels with the second)
  src=${NIPS4B:-../shared/data/nips4b}
  rm -rf .gpu && mkdir -p .gpu/a/audio .gpu/b/audio
  total=0
  for f in "$src"/audio/*; do
    size=$(stat -c %s "$f")
    if [ $((total + size)) -lt 40000000 ]; then cp "$f" .gpu/a/audio/; total=$((total + size)); else cp "$f" .gpu/b/audio/; fi
  done
  cp "$src"/*.csv .gpu/b/
  du -sh .gpu/a .gpu/b ;;
stage)  # device call 1: wheels installed and the first half put in place
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  mkdir -p "$DATA/audio" && cp .gpu/a/audio/* "$DATA/audio/"
  PYTHONPATH="/tmp/site:$PWD/src" python3 -c "import torch, soundfile, soxr, birdsed; print(torch.__version__, torch.cuda.get_device_name(0))"
  ls "$DATA/audio" | wc -l ;;
run)  # device call 2 (or here, with DATA and SMOKE=1): every recipe at once
  if [ -z "${SMOKE:-}" ] && [ -d .gpu/b ]; then cp .gpu/b/*.csv "$DATA/" && cp .gpu/b/audio/* "$DATA/audio/"; fi
  n=$(ls "$DATA/audio" | wc -l)
  [ "$n" = 550 ] || { echo "expected 550 clips in $DATA/audio, found $n (did the stage call run on this machine?)"; exit 1; }
  [ -d /tmp/site ] && export PYTHONPATH=/tmp/site
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
  extra=(--set train.workers=2)
  if [ -n "${SMOKE:-}" ]; then  # a few steps of a small model, two recipes, one fold: checks the plumbing
    RECIPES=("${RECIPES[@]:0:2}")
    extra=(--only-folds 0 --set model.backbone=mobilenetv3_small_100 --set model.pretrained=false
           --set train.max_steps=2 --set train.epochs=1 --set train.head_warmup_epochs=2 --set train.workers=0)
  fi
  mkdir -p "$OUT" "$WORK"
  { nvidia-smi --query-gpu=name,memory.total --format=csv; nproc; } 2>&1 | tee "$OUT/env.log"
  for r in "${RECIPES[@]}"; do
    name=${r%%|*}; read -ra sets <<< "${r#*|}"
    timeout "$DEADLINE" python3 benchmarks/nips4b.py --data "$DATA" --out "$WORK/$name" "${sets[@]}" "${extra[@]}" \
      > "$WORK/$name.log" 2>&1 &
  done
  wait
  for r in "${RECIPES[@]}"; do
    name=${r%%|*}
    echo "== $name"; grep -E "^ +(macro_ap|micro_ap|row_f1|train_s):|^pooled" "$WORK/$name.log" || tail -3 "$WORK/$name.log"
    files=$(cd "$WORK" && find "$name" -name nips4b.json -o -name scores.parquet -path "*pred_test*" -o -name metrics.csv)
    tar -czf "$OUT/$name.tgz" -C "$WORK" "$name.log" $files
  done ;;
*) echo "usage: $0 split|stage|run"; exit 2 ;;
esac
