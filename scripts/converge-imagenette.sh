#!/bin/sh
# scripts/converge-imagenette.sh BUILD_DIR [DATA_DIR] — a convergence check on real photos:
# imagenette-224-mini (10 ImageNet classes, 300 train + 50 val JPEGs per class, 224x224; see
# ../shared/data/README.md) -> LMDBs -> resnet18 at 64x64 on the CPU, 2 local workers x 32
# images, 16 epochs, cosine schedule -> val top-1/top-5 over the 500 val images.
# Takes ~25 min on 2 cores. Last line: the trainer's RESULT line.
# Knobs (environment): CONV_OUT (conv-out), CONV_EPOCHS (16), CONV_ARCH (resnet18), CONV_SIZE (64).
set -eu
build=${1:-build}
data=${2:-${IH_SHARED_DATA:-$(dirname "$0")/../../shared/data}/imagenette-224-mini}
out=${CONV_OUT:-conv-out}
if [ ! -d "$data/train" ] || [ ! -d "$data/val" ]; then
    echo "converge-imagenette: no imagenette-224-mini at $data (want train/ and val/ class folders);" \
         "pass its path as the second argument" >&2
    exit 1
fi
rm -rf "$out"
mkdir -p "$out"
"$build/tools/make_lmdb" --quiet "$data/train" "$out/train.lmdb"
"$build/tools/make_lmdb" --quiet "$data/val" "$out/val.lmdb"
"$build/bin/train" --nproc 2 --train "$out/train.lmdb" --val "$out/val.lmdb" -o "$out/run" \
    --arch "${CONV_ARCH:-resnet18}" --image-size "${CONV_SIZE:-64}" --batch-size 32 \
    --epochs "${CONV_EPOCHS:-16}" --base-lr 0.4 --warmup-epochs 2 --schedule cosine --min-scale 0.25 \
    --threads 1 --log-every 20 | tee "$out/train.log"
