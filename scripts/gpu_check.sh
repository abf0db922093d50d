#!/usr/bin/env bash
# scripts/gpu_check.sh — the one call to make on a lent GPU machine: unpack the carried .debs,
# build with CUDA, run the GPU tests (the CUDA backend through the same test sources as the
# CPU, CUDA vs CPU on the same weights in fp32, bf16 and fp16, device SGD vs the CPU optimizer,
# fp16 loss scaling, per-layer gradient hand-over, 2 workers vs --accumulate 2 on CUDA, all with
# the defaults: the graph API, BN on cuDNN with each residual join as one BN_ADD_ACTIVATION call;
# the BN ones again with cuDNN's BN required, IH_CUDNN_BN=cudnn+add:require, without the joins,
# IH_CUDNN_BN=cudnn:require, and on our BN kernels, IH_CUDNN_BN=ours; single conv layers and the
# whole-net tests again on cuDNN's legacy API, IH_CUDNN_API=legacy, and with the BN statistics
# fused into the convolutions, IH_CUDNN_FUSE=stats:require),
# then benchmark ResNet-50 training steps (synthetic input, n = 32 and 256) against torchvision's
# resnet50 under PyTorch bf16 autocast + channels-last in the same run (and ours with the
# defaults against ours with our BN kernels, IH_CUDNN_BN=ours, with cuDNN's BN without the
# joins, IH_CUDNN_BN=cudnn, on the legacy API, and with IH_CUDNN_FUSE=stats), then run the real
# trainer end to end: `train --mode=profile` (resnet50 at 64 px, n = 64, from an LMDB of
# make_synthetic JPEGs, 1 and 2 workers on this GPU) and `make demo`'s job with --backend cuda
# next to the same on the CPU (top-1 of each), print one table, and end with
#   RESULT gpu=... ours_n32_img_s=... torch_n32_img_s=... ours_n256_img_s=...
#          torch_n256_img_s=... max_rel_err=... profile_k1_img_s=... profile_k2_exposed_comm=...
#          ours_legacy_n32_img_s=... ours_legacy_n256_img_s=... ours_fused_n32_img_s=...
#          ours_fused_n256_img_s=... max_rel_err_fused=... ours_cudnnbn_n32_img_s=...
#          ours_cudnnbn_n256_img_s=... max_rel_err_cudnnbn=... max_rel_l2_cudnnbn=...
#          ours_ownbn_n32_img_s=... ours_ownbn_n256_img_s=... max_rel_err_ownbn=...
#          max_rel_err_cudnnbnadd=... (and more: the RESULT line at the end of this file)
# max_rel_err is the worst per-tensor max|cuda-cpu|/max|cpu| of test_cuda_vs_cpu in bf16 (the
# speed mode); max_rel_err_fp32 is the exact mode's, max_rel_err_fp16 the fp16 option's, and
# max_rel_err_legacy / max_rel_err_fp32_legacy the same with IH_CUDNN_API=legacy, max_rel_err_fused
# bf16's with IH_CUDNN_FUSE=stats:require, max_rel_err_cudnnbn / max_rel_l2_cudnnbn (and _fp16) bf16's with
# IH_CUDNN_BN=cudnn:require, _cudnnbnadd with cudnn+add:require, _ownbn with IH_CUDNN_BN=ours;
# max_rel_l2 / max_rel_l2_fp16 the worst per-tensor
# relative L2 error in bf16 / fp16 (what those precisions are gated by). The CPU-only suite is CI's job and is not rerun here. Time: the optional stages (cuDNN-BN, eager,
# own-BN, legacy-API and fused bench rows, the k=2 profile) are skipped when less than their share of IH_GPU_CHECK_BUDGET
# (default 540 s) is left, so one call stays under 10 minutes.
#
# The GPU machines have nvcc and PyTorch but no libjpeg-turbo/LMDB/OpenBLAS, and cuDNN/NCCL
# only as PyTorch's pip packages: carry the Debian packages in .dev/debs
# (scripts/fetch-gpu-debs) and run   bash scripts/gpu_check.sh   with carry [".dev"].
# Logs go to $OUT (or /tmp/ih-gpu-out). IH_GPU_CHECK_DRY=1 runs the shell logic without a GPU
# (build, tests and bench skipped, numbers "na"; the profile stage runs on the CPU backend
# with a tiny resnet8 when $IH_GPU_CHECK_BUILD, default build-gpu, holds a built train);
# IH_BENCH_MIN_RATIO=x fails when ours/torch < x.
# Splitting the work over two calls when one does not fit: IH_GPU_CHECK_TESTS=REGEX runs only
# the GPU tests matching it (ctest -R), IH_GPU_CHECK_SKIP="tests bench profile" (any of them)
# skips whole stages ("demo": make demo's job on the GPU and the CPU; "rows": only the own-BN, cuDNN-BN, eager, legacy-API and fused bench rows,
# or one kind of them: "ownbn", "cudnnbn", "eager", "legacy", "fused"; "bn": bench_bn and bench_bn_graph),
# IH_GPU_CHECK_TEST_TIMEOUT (default 200) bounds the test stage; a second call on a warm
# machine reuses the build.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/ih-gpu-out}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
t0=$(date +%s)
budget=${IH_GPU_CHECK_BUDGET:-540}
left() { echo $(( budget - ($(date +%s) - t0) )); }
dry=${IH_GPU_CHECK_DRY:-0}
jobs=$(nproc)
stage() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
skip=" ${IH_GPU_CHECK_SKIP:-} "
skipped() { case "$skip" in *" $1 "*) echo "== $1: skipped (IH_GPU_CHECK_SKIP)"; return 0;; esac; return 1; }

stage machine
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 | tr ' ' '_')
gpu=${gpu:-none}
echo "gpu: $gpu, $jobs cores"

root=/tmp/ihroot
arch=x86_64-linux-gnu
if [ -d .dev/debs ]; then
    mkdir -p "$root"
    for f in .dev/debs/*.deb; do
        if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$f" "$root"
        else (d=$(mktemp -d) && cd "$d" && ar x "$OLDPWD/$f" && tar xf data.tar.* -C "$root"); fi
    done
fi
py=$(command -v python3 || echo python3)
pyloc() { "$py" -c "import importlib.util; s=importlib.util.find_spec('$1'); print(list(s.submodule_search_locations)[0] if s else '')" 2>/dev/null; }
cudnn=$(pyloc nvidia.cudnn); nccl=$(pyloc nvidia.nccl)
# the wheels' layout has changed between releases: when lib/ is not where it was, look for the
# library under the package (or under the whole nvidia namespace) and take its folder's parent
findlib() { # pkgdir name
    local f
    f=$(ls "$1"/lib/"$2".so* 2>/dev/null | head -n1)
    [ -z "$f" ] && [ -n "$1" ] && f=$(find "$1" "$(dirname "$1")" -name "$2.so*" 2>/dev/null | sort | head -n1)
    echo "$f"
}
cudnn_lib=$(findlib "$cudnn" libcudnn); nccl_lib=$(findlib "$nccl" libnccl)
[ -n "$cudnn_lib" ] && cudnn=$(dirname "$(dirname "$cudnn_lib")")
[ -n "$nccl_lib" ] && nccl=$(dirname "$(dirname "$nccl_lib")")
echo "cuDNN at ${cudnn:-?} (${cudnn_lib:-no library}), NCCL at ${nccl:-?} (${nccl_lib:-no library})"
export LD_LIBRARY_PATH="$root/usr/lib/$arch:$root/usr/lib/$arch/openblas-pthread:${cudnn:+$cudnn/lib:}${nccl:+$nccl/lib:}${LD_LIBRARY_PATH:-}"
export LIBRARY_PATH="$root/usr/lib/$arch:${LIBRARY_PATH:-}"

build=${IH_GPU_CHECK_BUILD:-build-gpu}
gpu_rc=1
if [ "$dry" = 1 ]; then
    stage "dry run: no build"
else
    stage "configure + build"
    blas="$root/usr/lib/$arch/openblas-pthread/libopenblas.so"
    blas_args=()
    [ -e "$blas" ] && blas_args=(-DBLAS_LIBRARIES="$blas" -DCBLAS_INCLUDE_DIR="$root/usr/include/$arch/openblas-pthread")
    timeout 120 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DIH_WITH_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH="$root/usr" "${blas_args[@]}" \
        ${cudnn_lib:+-DCUDNN_INCLUDE_DIR="$cudnn/include" -DCUDNN_LIBRARY="$cudnn_lib"} \
        ${nccl_lib:+-DNCCL_INCLUDE_DIR="$nccl/include" -DNCCL_LIBRARY="$nccl_lib"} \
        >"$out/configure.log" 2>&1 || { tail -n 30 "$out/configure.log"; echo "configure failed"; }
    grep -E '\[(x| )\]' "$out/configure.log"
    # Only what this check runs: other modules' work in progress must not stop it.
    timeout 300 cmake --build "$build" -j "$jobs" --target test_cuda_probe test_train_step_contract \
        test_resnet_vs_pytorch test_cuda_vs_cpu_fp32 test_cuda_sgd test_cuda_grad_ready \
        test_cuda_fp16_loss_scale test_cuda_conv_graph bench_train_step \
        >"$out/build.log" 2>&1 || { grep -E 'error|Error' "$out/build.log" | head -n 40; echo "build failed"; }
    # BN against cuDNN's (a build of its own: it calls cuDNN's deprecated BN API, which a future
    # cuDNN may drop)
    timeout 180 cmake --build "$build" -j "$jobs" --target bench_bn bench_bn_graph >"$out/build_bn.log" 2>&1 \
        || { grep -E 'error|Error' "$out/build_bn.log" | head -n 20; echo "bench_bn build failed"; }
    # The trainer and the data tools (2-worker test, profile stage): a separate build, so that a
    # failure there leaves the model tests above to run.
    timeout 200 cmake --build "$build" -j "$jobs" --target train_bin make_synthetic make_lmdb \
        test_dp_cuda_equivalence >"$out/build_train.log" 2>&1 \
        || { grep -E 'error|Error' "$out/build_train.log" | head -n 40; echo "trainer build failed"; }
    # NCCL (only when configure found it: the targets exist then): the two-level allreduce on
    # device buffers, and ./train --intra nccl.
    if grep -q '\[x\] NCCL' "$out/configure.log"; then
        timeout 200 cmake --build "$build" -j "$jobs" --target test_hier_nccl test_dp_nccl_equivalence \
            >"$out/build_nccl.log" 2>&1 \
            || { grep -E 'error|Error' "$out/build_nccl.log" | head -n 40; echo "NCCL build failed"; }
    fi

    stage "GPU tests (CUDA backend vs CPU and vs PyTorch references, device SGD, gradient hand-over, 2 workers, NCCL)"
    # The default backend's tests first; then the BN variants (the newest), then the
    # legacy-API, fused and NCCL ones, each group in what is left of the stage, so an overrun
    # costs the optional groups, not the core ones.
    groups=('_cudnnbn|_ownbn' '_legacy|conv_graph|_fused|nccl')
    extra=$(IFS='|'; echo "${groups[*]}")
    if skipped tests; then gpu_rc=0; : >"$out/tests.log"
    elif [ -n "${IH_GPU_CHECK_TESTS:-}" ]; then
        (cd "$build" && IH_DEBUG=INFO timeout "${IH_GPU_CHECK_TEST_TIMEOUT:-200}" ctest -L gpu \
            -R "$IH_GPU_CHECK_TESTS" -j 4 -V) >"$out/tests.log" 2>&1
        gpu_rc=$?
    else
        ts=$(date +%s); tmax=${IH_GPU_CHECK_TEST_TIMEOUT:-200}
        (cd "$build" && IH_DEBUG=INFO timeout "$tmax" ctest -L gpu -E "$extra" -j 4 -V) >"$out/tests.log" 2>&1
        gpu_rc=$?
        for grp in "${groups[@]}"; do
            trest=$(( tmax - ($(date +%s) - ts) ))
            if [ "$trest" -gt 30 ]; then
                (cd "$build" && IH_DEBUG=INFO timeout "$trest" ctest -L gpu -R "$grp" -j 4 -V) >>"$out/tests.log" 2>&1
                rc2=$?; [ "$gpu_rc" = 0 ] && gpu_rc=$rc2
            else
                echo "tests matching '$grp' skipped: ${trest}s of the test stage left (IH_GPU_CHECK_TESTS='$grp' runs them)"
                [ "$gpu_rc" = 0 ] && gpu_rc=124
            fi
        done
    fi
    # -V: passing tests' output too (MAXREL, calibration lines), each line prefixed "NN: "
    grep -E 'Test +#|tests passed|MAXREL|MAXGATE| gate: |calibration|loss|FAIL|differ|max \|w_' "$out/tests.log" | head -n 120
fi
# "MAXREL bf16 x" (the default graph API) and "MAXREL bf16_legacy x" (IH_CUDNN_API=legacy): the
# space keeps them apart. MAXREL is elementwise (max|a-b| / max|ref| per tensor); MAXL2 the
# relative L2 error per tensor, the quantity bf16 and fp16 are gated by.
maxrel=$(grep -h 'MAXREL bf16 ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXREL bf16 //' | awk '{print $1}' | tail -n1)
maxrel32=$(grep -h 'MAXREL fp32 ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXREL fp32 //' | awk '{print $1}' | tail -n1)
maxrel16=$(grep -h 'MAXREL fp16 ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXREL fp16 //' | awk '{print $1}' | tail -n1)
maxrelg=$(grep -h 'MAXREL bf16_legacy ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXREL bf16_legacy //' | awk '{print $1}' | tail -n1)
maxrel32g=$(grep -h 'MAXREL fp32_legacy ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXREL fp32_legacy //' | awk '{print $1}' | tail -n1)
maxl2=$(grep -h 'MAXL2 bf16 ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXL2 bf16 //' | awk '{print $1}' | tail -n1)
maxl216=$(grep -h 'MAXL2 fp16 ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXL2 fp16 //' | awk '{print $1}' | tail -n1)
maxrelf=$(grep -h 'MAXREL bf16_fused ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXREL bf16_fused //' | awk '{print $1}' | tail -n1)
# MAXGATE: the worst gradient segment's relative L2 over its gate (test_cuda_vs_cpu's header; <= 1 passes)
maxgate=$(grep -h 'MAXGATE bf16 ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXGATE bf16 //' | awk '{print $1}' | tail -n1)
maxgateb=$(grep -h 'MAXGATE bf16_cudnnbn ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXGATE bf16_cudnnbn //' | awk '{print $1}' | tail -n1)
maxrelb=$(grep -h 'MAXREL bf16_cudnnbn ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXREL bf16_cudnnbn //' | awk '{print $1}' | tail -n1)
maxl2b=$(grep -h 'MAXL2 bf16_cudnnbn ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXL2 bf16_cudnnbn //' | awk '{print $1}' | tail -n1)
maxl2b16=$(grep -h 'MAXL2 fp16_cudnnbn ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXL2 fp16_cudnnbn //' | awk '{print $1}' | tail -n1)
maxrela=$(grep -h 'MAXREL bf16_cudnnbnadd ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXREL bf16_cudnnbnadd //' | awk '{print $1}' | tail -n1)
maxl2a=$(grep -h 'MAXL2 bf16_cudnnbnadd ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXL2 bf16_cudnnbnadd //' | awk '{print $1}' | tail -n1)
maxgatea=$(grep -h 'MAXGATE bf16_cudnnbnadd ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXGATE bf16_cudnnbnadd //' | awk '{print $1}' | tail -n1)
maxrelo=$(grep -h 'MAXREL bf16_ownbn ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXREL bf16_ownbn //' | awk '{print $1}' | tail -n1)
maxl2o=$(grep -h 'MAXL2 bf16_ownbn ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXL2 bf16_ownbn //' | awk '{print $1}' | tail -n1)
maxgateo=$(grep -h 'MAXGATE bf16_ownbn ' "$out/tests.log" 2>/dev/null | sed 's/.*MAXGATE bf16_ownbn //' | awk '{print $1}' | tail -n1)
# warnings of layers where cuDNN had no engine for the fused statistics (IH_CUDNN_FUSE=stats goes on without)
nofuse=$(cat "$out/tests.log" 2>/dev/null | grep -c 'no fused convolution statistics' || true)

declare -A ips
bench_one() { # who n   (who = ours: the defaults | torch | eager: ours without the CUDA graph |
    # legacy: ours with cuDNN's legacy API, IH_CUDNN_API=legacy | fused: and the BN statistics
    # fused into the convolutions, IH_CUDNN_FUSE=stats | cudnnbn: BN on cuDNN without the joins,
    # IH_CUDNN_BN=cudnn | ownbn: BN on our kernels, IH_CUDNN_BN=ours)
    local who=$1 n=$2 iters=20 log="$out/bench.log"
    [ "$n" -ge 256 ] && iters=10
    if [ "$dry" = 1 ]; then ips[$who$n]=na; return; fi
    local one="$out/bench_$who$n.tmp"
    if [ "$who" != torch ]; then
        [ "$who" = eager ] && export IH_CUDA_GRAPH=0
        [ "$who" = legacy ] && export IH_CUDNN_API=legacy
        [ "$who" = fused ] && export IH_CUDNN_FUSE=stats
        [ "$who" = cudnnbn ] && export IH_CUDNN_BN=cudnn
        [ "$who" = ownbn ] && export IH_CUDNN_BN=ours
        # the default, fused and cuDNN-BN rows log each layer's engines (INFO) into bench.log
        case "$who" in ours|fused|cudnnbn) export IH_DEBUG=INFO;; esac
        timeout 120 "$build/bench/bench_train_step" --batch="$n" --iters=$iters >"$one" 2>&1
        unset IH_CUDA_GRAPH IH_CUDNN_API IH_CUDNN_FUSE IH_CUDNN_BN IH_DEBUG
    else
        PYTHONUNBUFFERED=1 timeout 120 "$py" bench/torch_train_step.py --batch "$n" --iters $iters >"$one" 2>&1
    fi
    echo "rc=$?" >>"$one"
    { echo "-- $who n=$n"; cat "$one"; } >>"$log"
    local v
    v=$(grep -E "^BENCH (ours|torch) .* n=$n " "$one" | tail -n1 | sed 's/.*img_s=\([0-9.]*\).*/\1/')
    ips[$who$n]=${v:-na}
    grep -A1 '^# arch' "$one" | tail -n1
    rm -f "$one"
}
stage "benchmark: ResNet-50 training step (fwd+loss+bwd, no optimiser), synthetic 224x224, bf16"
if skipped bench; then for k in ours32 torch32 ours256 torch256 cudnnbn32 cudnnbn256 ownbn32 ownbn256 eager32 legacy32 legacy256 fused32 fused256; do ips[$k]=skipped; done
else
for n in 32 256; do bench_one ours $n; bench_one torch $n; done
if skipped rows; then for k in cudnnbn32 cudnnbn256 ownbn32 ownbn256 eager32 legacy32 legacy256 fused32 fused256; do ips[$k]=skipped; done
else
for n in 256 32; do # what the default BN (cuDNN's, with the joins) gains over ours (first of
    # the optional rows), and over cuDNN's without the joins
    if [ "$(left)" -gt 240 ] && ! skipped ownbn; then bench_one ownbn $n
    else ips[ownbn$n]=skipped; echo "own-BN row n=$n skipped: $(left)s of the budget left"; fi
    if [ "$(left)" -gt 240 ] && ! skipped cudnnbn; then bench_one cudnnbn $n
    else ips[cudnnbn$n]=skipped; echo "cuDNN-BN row n=$n skipped: $(left)s of the budget left"; fi
done
if [ "$(left)" -gt 240 ] && ! skipped eager; then bench_one eager 32 # attribution: the same step without the CUDA graph
else ips[eager32]=skipped; echo "eager row skipped: $(left)s of the budget left"; fi
for n in 32 256; do # the same step with the convolutions on cuDNN's legacy API
    if [ "$(left)" -gt 240 ] && ! skipped legacy; then bench_one legacy $n
    else ips[legacy$n]=skipped; echo "legacy-API row n=$n skipped: $(left)s of the budget left"; fi
done
for n in 256 32; do # and with the BN statistics fused into the convolutions (n = 256 first: the
    # memory traffic it saves matters most there)
    if [ "$(left)" -gt 240 ] && ! skipped fused; then bench_one fused $n
    else ips[fused$n]=skipped; echo "fused row n=$n skipped: $(left)s of the budget left"; fi
done
fi
fi

# BatchNorm: our kernels against cuDNN's BN (BatchNormalization*Ex, what PyTorch's channels-last
# BN calls) on every BN of ResNet-50, n = 256 and 32 (bench/bench_bn.cu)
declare -A bn bng
stage "benchmark: BatchNorm, ours vs cuDNN, ResNet-50's 53 BN layers, bf16"
for n in 256 32; do
    bn[r$n]=na; bn[f$n]=na; bn[c$n]=na
    if skipped bench || skipped bn; then bn[r$n]=skipped; continue; fi
    if [ "$dry" = 1 ]; then continue; fi
    if [ "$(left)" -lt 100 ]; then bn[r$n]=skipped; echo "BN bench n=$n skipped: $(left)s of the budget left"; continue; fi
    timeout 90 "$build/bench/bench_bn" --batch="$n" >"$out/bench_bn$n.tmp" 2>&1
    echo "rc=$?" >>"$out/bench_bn$n.tmp"
    { echo "-- bench_bn n=$n"; cat "$out/bench_bn$n.tmp"; } >>"$out/bench.log"
    grep -E '^(#|  |RESULT|bench_bn)' "$out/bench_bn$n.tmp"
    res=$(grep '^RESULT' "$out/bench_bn$n.tmp" | tail -n1)
    rm -f "$out/bench_bn$n.tmp"
    [ -z "$res" ] && continue
    bn[r$n]=$(echo "$res" | sed -n 's/.* cudnn_over_ours=\([0-9.a-z]*\).*/\1/p')
    bn[f$n]=$(echo "$res" | awk '{for(i=1;i<=NF;i++){split($i,a,"="); v[a[1]]=a[2]} printf "%.2f", v["ours_fwd_ms"]+v["ours_bwd_ms"]}')
    bn[c$n]=$(echo "$res" | awk '{for(i=1;i<=NF;i++){split($i,a,"="); v[a[1]]=a[2]} printf "%.2f", v["cudnn_fwd_ms"]+v["cudnn_bwd_ms"]}')
    bn[d$n]=$(echo "$res" | sed -n 's/.* maxdiff=\([^ ]*\).*/\1/p')
    # the residual joins (BN + add + ReLU) against cuDNN's BN_ADD_ACTIVATION
    bn[ar$n]=$(echo "$res" | sed -n 's/.* add_cudnn_over_ours=\([0-9.a-z]*\).*/\1/p')
    bn[af$n]=$(echo "$res" | sed -n 's/.* add_ours_ms=\([0-9.a-z]*\).*/\1/p')
    bn[ac$n]=$(echo "$res" | sed -n 's/.* add_cudnn_ms=\([0-9.a-z]*\).*/\1/p')
    bn[ak$n]=$(echo "$res" | sed -n 's/.* add_ok=\([01]\).*/\1/p')
done

# cuDNN's BN on its backend graph API (NORM_FORWARD/NORM_BACKWARD, the successor of the
# deprecated Ex calls that IH_CUDNN_BN runs) against the Ex calls (bench/bench_bn_graph.cu):
# whether it has engines for the net's shapes, agrees, and how fast it is; n = 256, then 32
stage "benchmark: BatchNorm, cuDNN graph API vs cuDNN Ex API, ResNet-50's BN shapes, bf16"
for n in 256 32; do
    bng[r$n]=na; bng[ok$n]=na; bng[p$n]=na
    if skipped bench || skipped bn; then bng[r$n]=skipped; continue; fi
    if [ "$dry" = 1 ]; then continue; fi
    if [ "$(left)" -lt 120 ]; then bng[r$n]=skipped; echo "graph-API BN bench n=$n skipped: $(left)s of the budget left"; continue; fi
    timeout 120 "$build/bench/bench_bn_graph" --batch="$n" >"$out/bench_bn_graph$n.tmp" 2>&1
    echo "rc=$?" >>"$out/bench_bn_graph$n.tmp"
    { echo "-- bench_bn_graph n=$n"; cat "$out/bench_bn_graph$n.tmp"; } >>"$out/bench.log"
    grep -E '^(#|  |RESULT|bench_bn_graph)' "$out/bench_bn_graph$n.tmp" | head -n 60
    res=$(grep '^RESULT' "$out/bench_bn_graph$n.tmp" | tail -n1)
    rm -f "$out/bench_bn_graph$n.tmp"
    [ -z "$res" ] && continue
    bng[r$n]=$(echo "$res" | sed -n 's/.* graph_over_ex=\([0-9.a-z]*\).*/\1/p')
    bng[ok$n]=$(echo "$res" | sed -n 's/.* ok=\([01]\).*/\1/p')
    bng[p$n]=$(echo "$res" | sed -n 's/.* plan_s=\([0-9.a-z]*\).*/\1/p')
done

# End to end: the real trainer from an LMDB (decode, augmentation, H2D, graph step, per-layer
# gradient copies and the allreduce with 2 workers, device SGD), --mode=profile's RESULT line.
declare -A prof
prof_one() { # k [nccl]: workers (sharing this GPU when there is one); nccl: as 2 simulated
    # nodes x 1 rank with --intra nccl (the device-side gradient path on one GPU)
    local k=$1 tl key=$1 env=()
    local be=(--backend cuda --arch resnet50 --image-size 64 -b 64 --profile-iters 20)
    prof[net]="resnet50 n=64"
    if [ "$dry" = 1 ]; then
        # no GPU: the same logic on the CPU with a tiny net, when a built train is at hand
        [ -x "$build/bin/train" ] || { echo "profile k=$k: dry run, no $build/bin/train"; return; }
        be=(--backend cpu --arch resnet8 --image-size 16 -b 8 --profile-iters 3)
        prof[net]="resnet8 n=8 16px cpu (dry)"
    fi
    if [ "${2:-}" = nccl ]; then
        key=${k}nccl
        env=(IH_RANKS_PER_NODE=1)
        if [ "$dry" = 1 ]; then env+=(IH_DEBUG_INTRA_VIEW=1); be+=(--hier on)   # CPU stand-in
        else be+=(--intra nccl); fi
    fi
    local log="$out/profile_k$key.log"
    prof[ips$key]=na; prof[exp$key]=na; prof[step$key]=na
    tl=$(left); [ "$tl" -gt 150 ] && tl=150
    if [ "$tl" -lt 40 ]; then prof[ips$k]=skipped; echo "profile k=$k skipped: $(left)s left"; return; fi
    local th=$(( jobs / k )); [ "$th" -lt 1 ] && th=1   # decode threads: the cores, shared by the workers
    env "${env[@]}" timeout "$tl" "$build/bin/train" --mode=profile "${be[@]}" --nproc "$k" --threads "$th" \
        --train "$data/train.lmdb" -o "$data/out_k$key" --no-progress >"$log" 2>&1
    echo "rc=$?" >>"$log"
    local res
    res=$(grep -h '^RESULT workers=' "$log" | tail -n1)
    if [ -z "$res" ]; then echo "profile k=$key: no RESULT line"; tail -n 15 "$log"; return; fi
    grep -h 'allreduce' "$log" | grep -iv '^  ' | head -n 3
    echo "$res"
    grep -E '^  (forward|backward|allreduce|optimizer|step|data wait)' "$log"
    prof[ips$key]=$(echo "$res" | sed -n 's/.* img_s=\([0-9.]*\).*/\1/p')
    prof[exp$key]=$(echo "$res" | sed -n 's/.* exposed_comm_frac=\([0-9.]*\).*/\1/p')
    prof[step$key]=$(echo "$res" | sed -n 's/.* step_ms=\([0-9.]*\).*/\1/p')
}
stage "end to end: train --mode=profile, resnet50 at 64 px from a synthetic LMDB, 1 and 2 workers, 2 with NCCL"
data=${TMPDIR:-/tmp}/ih-profile-data   # not under $out: only a few files come back from there
rm -rf "$data"; mkdir -p "$data"
if skipped profile; then :
elif [ -x "$build/tools/make_synthetic" ] && [ -x "$build/tools/make_lmdb" ] && [ -x "$build/bin/train" ]; then
    if timeout 60 "$build/tools/make_synthetic" --out "$data/synth" --classes 10 --train-per-class 160 \
            --val-per-class 1 --seed 7 >"$out/profile_data.log" 2>&1 \
        && timeout 60 "$build/tools/make_lmdb" "$data/synth/train" "$data/train.lmdb" >>"$out/profile_data.log" 2>&1; then
        prof_one 1
        if [ "$(left)" -gt 60 ]; then prof_one 2; else prof[ips2]=skipped; echo "profile k=2 skipped"; fi
        if [ "$(left)" -gt 60 ]; then prof_one 2 nccl; else prof[ips2nccl]=skipped; echo "profile k=2 nccl skipped"; fi
    else
        echo "making the profile LMDB failed:"; tail -n 10 "$out/profile_data.log"
    fi
else
    echo "no $build/bin/train or data tools: profile stage skipped"
fi

# The demo on the GPU: `make demo`'s job (scripts/demo.sh: synthetic JPEGs, LMDBs, resnet8 at
# 32 px, 3 epochs, then validation) with --backend cuda, one worker (bf16, BN on cuDNN, eval on
# ours), and the same job on the CPU backend beside it: the two top-1s should agree.
declare -A demo
stage "demo: make demo's job on the GPU (bf16) and on the CPU"
for be in cuda cpu; do
    demo[$be]=na; demo[s$be]=na
    if skipped demo; then demo[$be]=skipped; continue; fi
    [ -x "$build/bin/train" ] && [ -x "$build/tools/make_synthetic" ] || { echo "demo $be: no built train"; continue; }
    if [ "$dry" = 1 ] && [ "$be" = cuda ]; then continue; fi
    if [ "$(left)" -lt 60 ]; then demo[$be]=skipped; echo "demo $be skipped: $(left)s left"; continue; fi
    tl=$(left); [ "$tl" -gt 150 ] && tl=150
    dargs=(DEMO_BACKEND=$be DEMO_WORKERS=1 DEMO_OUT="$data/demo_$be")
    [ "$dry" = 1 ] && dargs+=(DEMO_TRAIN_PER_CLASS=40 DEMO_VAL_PER_CLASS=10 DEMO_EPOCHS=1)
    env "${dargs[@]}" timeout "$tl" sh scripts/demo.sh "$build" >"$out/demo_$be.log" 2>&1
    echo "rc=$?" >>"$out/demo_$be.log"
    grep -E '^(RESULT|== 3/3)|top1|error' "$out/demo_$be.log" | tail -n 4
    r=$(grep '^RESULT top1=' "$out/demo_$be.log" | tail -n1)
    demo[$be]=$(echo "$r" | sed -n 's/.*top1=\([0-9.a-z]*\).*/\1/p'); demo[$be]=${demo[$be]:-na}
    demo[s$be]=$(echo "$r" | sed -n 's/.*seconds=\([0-9]*\).*/\1/p'); demo[s$be]=${demo[s$be]:-na}
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else print "na" }'; }
stage summary
printf '# %-10s %-6s %14s %14s %12s\n' "model" "n" "ours(img/s)" "torch(img/s)" "ours/torch"
for n in 32 256; do
    printf '  %-10s %-6s %14s %14s %12s\n' resnet50 "$n" "${ips[ours$n]}" "${ips[torch$n]}" \
        "$(ratio "${ips[ours$n]}" "${ips[torch$n]}")"
done
echo "# ours at n=32 without the CUDA graph (IH_CUDA_GRAPH=0): ${ips[eager32]} img/s"
printf '# %-10s %-6s %14s %14s %12s %14s %12s %15s %13s %14s %12s\n' "variant" "n" "default(img/s)" "legacy(img/s)" \
    "legacy/def" "fused(img/s)" "fused/def" "cudnnBN(img/s)" "cudnnBN/def" "ownBN(img/s)" "ownBN/def"
for n in 32 256; do
    printf '  %-10s %-6s %14s %14s %12s %14s %12s %15s %13s %14s %12s\n' resnet50 "$n" "${ips[ours$n]}" \
        "${ips[legacy$n]}" "$(ratio "${ips[legacy$n]}" "${ips[ours$n]}")" "${ips[fused$n]}" \
        "$(ratio "${ips[fused$n]}" "${ips[ours$n]}")" "${ips[cudnnbn$n]}" "$(ratio "${ips[cudnnbn$n]}" "${ips[ours$n]}")" \
        "${ips[ownbn$n]}" "$(ratio "${ips[ownbn$n]}" "${ips[ours$n]}")"
done
echo "# default: graph API, BN on cuDNN with each residual join as one BN_ADD_ACTIVATION call; legacy: IH_CUDNN_API=legacy; fused: IH_CUDNN_FUSE=stats (BN on ours); cudnnBN: IH_CUDNN_BN=cudnn (no joins); ownBN: IH_CUDNN_BN=ours (our BN kernels)"
printf '# %-40s %6s %16s %16s %14s %10s\n' "BatchNorm, all of resnet50's (fwd+bwd)" "n" "ours(ms)" "cuDNN(ms)" "cuDNN/ours" "maxdiff"
for n in 32 256; do
    printf '  %-40s %6s %16s %16s %14s %10s\n' "bf16 NHWC, ReLU fused where the net has it" "$n" "${bn[f$n]:-na}" \
        "${bn[c$n]:-na}" "${bn[r$n]:-na}" "${bn[d$n]:-na}"
done
for n in 32 256; do
    printf '  %-40s %6s %16s %16s %14s %10s\n' "joins: BN+add+ReLU vs BN_ADD_ACTIVATION" "$n" "${bn[af$n]:-na}" \
        "${bn[ac$n]:-na}" "${bn[ar$n]:-na}" "ok=${bn[ak$n]:-na}"
done
for n in 32 256; do
    printf '  %-40s %6s %16s %16s %14s %10s\n' "graph API / Ex API (cuDNN BN, fwd+bwd)" "$n" "plan ${bng[p$n]:-na}s" "" \
        "${bng[r$n]:-na}" "ok=${bng[ok$n]:-na}"
done
nofuseb=$(cat "$out/bench.log" 2>/dev/null | grep -c 'no fused convolution statistics' || true)
echo "# fused statistics: warnings of layers without an engine: tests ${nofuse:-na}, bench ${nofuseb:-na} (a fused row with warnings ran those layers unfused)"
printf '# %-50s %12s %10s %18s\n' "train --mode=profile (64 px)" "img/s total" "step(ms)" "exposed comm/step"
for k in 1 2 2nccl; do
    printf '  %-50s %12s %10s %18s\n' "${prof[net]:-resnet50 n=64} workers=${k/nccl/ (nccl path)}" \
        "${prof[ips$k]:-na}" "${prof[step$k]:-na}" "${prof[exp$k]:-na}"
done
echo "# demo (resnet8, 32 px, 3 epochs, 1 worker): top-1 cuda ${demo[cuda]} in ${demo[scuda]} s, cpu ${demo[cpu]} in ${demo[scpu]} s"
echo "# GPU tests rc=$gpu_rc, max_rel_err bf16=${maxrel:-na} fp32=${maxrel32:-na} fp16=${maxrel16:-na} (relative L2 bf16=${maxl2:-na} fp16=${maxl216:-na}), legacy API bf16=${maxrelg:-na} fp32=${maxrel32g:-na}, fused bf16=${maxrelf:-na}, cuDNN BN without joins bf16=${maxrelb:-na} (relative L2 bf16=${maxl2b:-na} fp16=${maxl2b16:-na}), required with joins bf16=${maxrela:-na} (relative L2 ${maxl2a:-na}), our BN bf16=${maxrelo:-na} (relative L2 ${maxl2o:-na}); $(( $(date +%s) - t0 ))s in all"
rc=$gpu_rc
if [ -n "${IH_BENCH_MIN_RATIO:-}" ]; then
    for n in 32 256; do
        r=$(ratio "${ips[ours$n]}" "${ips[torch$n]}")
        awk -v r="$r" -v m="$IH_BENCH_MIN_RATIO" 'BEGIN { exit !(r != "na" && r+0 >= m+0) }' \
            || { echo "ratio at n=$n is $r < IH_BENCH_MIN_RATIO=$IH_BENCH_MIN_RATIO"; rc=1; }
    done
fi
echo "RESULT gpu=$gpu ours_n32_img_s=${ips[ours32]} torch_n32_img_s=${ips[torch32]} ours_n256_img_s=${ips[ours256]} torch_n256_img_s=${ips[torch256]} max_rel_err=${maxrel:-na} max_rel_err_fp32=${maxrel32:-na} max_rel_err_fp16=${maxrel16:-na} max_rel_l2=${maxl2:-na} max_rel_l2_fp16=${maxl216:-na} profile_k1_img_s=${prof[ips1]:-na} profile_k2_img_s=${prof[ips2]:-na} profile_k2_exposed_comm=${prof[exp2]:-na} profile_k2_nccl_img_s=${prof[ips2nccl]:-na} ours_legacy_n32_img_s=${ips[legacy32]} ours_legacy_n256_img_s=${ips[legacy256]} max_rel_err_legacy=${maxrelg:-na} max_rel_err_fp32_legacy=${maxrel32g:-na} ours_fused_n32_img_s=${ips[fused32]} ours_fused_n256_img_s=${ips[fused256]} max_rel_err_fused=${maxrelf:-na} bn_cudnn_over_ours_n256=${bn[r256]:-na} bn_cudnn_over_ours_n32=${bn[r32]:-na} bn_add_cudnn_over_ours_n256=${bn[ar256]:-na} bn_add_cudnn_over_ours_n32=${bn[ar32]:-na} bn_graph_over_ex_n256=${bng[r256]:-na} bn_graph_over_ex_n32=${bng[r32]:-na} bn_graph_ok_n256=${bng[ok256]:-na} bn_graph_plan_s_n256=${bng[p256]:-na} ours_cudnnbn_n32_img_s=${ips[cudnnbn32]} ours_cudnnbn_n256_img_s=${ips[cudnnbn256]} max_rel_err_cudnnbn=${maxrelb:-na} max_rel_l2_cudnnbn=${maxl2b:-na} max_rel_l2_cudnnbn_fp16=${maxl2b16:-na} max_gate=${maxgate:-na} max_gate_cudnnbn=${maxgateb:-na} max_rel_err_cudnnbnadd=${maxrela:-na} max_rel_l2_cudnnbnadd=${maxl2a:-na} max_gate_cudnnbnadd=${maxgatea:-na} ours_ownbn_n32_img_s=${ips[ownbn32]} ours_ownbn_n256_img_s=${ips[ownbn256]} max_rel_err_ownbn=${maxrelo:-na} max_rel_l2_ownbn=${maxl2o:-na} max_gate_ownbn=${maxgateo:-na} demo_cuda_top1=${demo[cuda]} demo_cpu_top1=${demo[cpu]} gpu_tests_rc=$gpu_rc"
exit $rc
