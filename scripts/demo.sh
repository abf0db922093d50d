#!/bin/sh
# scripts/demo.sh BUILD_DIR — the embedded default job behind `make demo`:
# a synthetic 10-class dataset of JPEGs -> train/val LMDBs -> a small ResNet trained on the
# CPU with the paper's recipe, data-parallel over 2 local workers (./train --nproc 2: 2 x 32
# images per step, gradients summed by allreduce overlapped with backward, per-worker BN)
# -> validation top-1 over the whole val set (sharded, counts summed).
# Last line: RESULT top1=... seconds=...
# Knobs (environment): DEMO_OUT (demo-out), DEMO_EPOCHS, DEMO_TRAIN_PER_CLASS, DEMO_VAL_PER_CLASS,
# DEMO_WORKERS (2; the global batch stays 64), DEMO_BACKEND (cpu; cuda trains on the GPU in
# bf16: scripts/gpu_check.sh runs it there).
set -eu
build=${1:-build}
out=${DEMO_OUT:-demo-out}
epochs=${DEMO_EPOCHS:-3}
ntrain=${DEMO_TRAIN_PER_CLASS:-500}
nval=${DEMO_VAL_PER_CLASS:-100}
workers=${DEMO_WORKERS:-2}
backend=${DEMO_BACKEND:-cpu}
per_worker=$(( 64 / workers ))
start=${DEMO_START:-$(date +%s)}

rm -rf "$out"
mkdir -p "$out"
echo "== 1/3 synthetic dataset: 10 classes, $ntrain train + $nval val images per class"
"$build/tools/make_synthetic" --out "$out/synth" --classes 10 --train-per-class "$ntrain" \
    --val-per-class "$nval" --seed 1
echo "== 2/3 LMDBs"
"$build/tools/make_lmdb" "$out/synth/train" "$out/train.lmdb"
"$build/tools/make_lmdb" "$out/synth/val" "$out/val.lmdb"
echo "== 3/3 training resnet8 at 32x32 on the $backend backend: $workers workers x $per_worker images ($epochs epochs)"
"$build/bin/train" --backend "$backend" --nproc "$workers" --train "$out/train.lmdb" --val "$out/val.lmdb" -o "$out/run" \
    --arch resnet8 --image-size 32 --batch-size "$per_worker" --epochs "$epochs" \
    --base-lr 0.4 --warmup-epochs 1 --schedule cosine --min-scale 0.35 --threads 1 \
    --log-every 20 | tee "$out/train.log"
top1=$(sed -n 's/^RESULT top1=\([0-9.]*\).*/\1/p' "$out/train.log" | tail -n 1)
echo "RESULT top1=${top1:-nan} seconds=$(( $(date +%s) - start ))"
