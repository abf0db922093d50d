#!/bin/sh
# scripts/bench.sh BUILD_DIR — `make bench`: runs every benchmark that this machine supports.
# Each benchmark prints its own table and ends with one `RESULT key=value ...` line; nothing here
# asserts on time. Real ImageNet JPEGs for the pipeline benchmark come from ../shared/data when
# present (IH_SHARED_DATA overrides), else the benchmark is skipped with a message.
set -u
build=${1:-build}
shared=${IH_SHARED_DATA:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}
work=${BENCH_OUT:-$build/bench-data}
mkdir -p "$work"

if [ -x "$build/bench/bench_allreduce" ]; then
    echo "== allreduce: ours vs memcpy and one TCP stream (2 ranks, 32 MiB and 100 MiB)"
    for size in 32M 100M; do
        "$build/bench/bench_allreduce" --nproc 2 --bytes "$size" --algo auto
    done
fi

if [ -x "$build/bench/bench_pipeline" ]; then
    src="$shared/imagenet-sample-1k"
    if [ -d "$src" ]; then
        [ -d "$work/imagenet-sample-1k.lmdb" ] ||
            "$build/tools/make_lmdb" --quiet "$src" "$work/imagenet-sample-1k.lmdb"
        echo "== pipeline: train/eval transforms vs full decode and the entropy-decode floor"
        "$build/bench/bench_pipeline" --threads 1,2 "$work/imagenet-sample-1k.lmdb"
    else
        echo "== pipeline: SKIP (no $src; set IH_SHARED_DATA to a folder holding imagenet-sample-1k/)"
    fi
fi

for b in "$build/bench/bench_model_train_step"; do
    if [ -x "$b" ]; then
        echo "== model: CPU train step img/s (resnet8 and resnet20, 32x32, batch 64)"
        "$b" resnet8 32 64 10
        "$b" resnet20 32 64 5
        break
    fi
done
