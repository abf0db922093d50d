#!/bin/bash
# tests/rdma/run_rdma.sh BUILD_DIR TEST [ARGS...] — runs one RDMA test where RDMA exists:
# natively when IH_TEST_RDMA_ADDR is set (an address on an RDMA netdev of this host), else in
# the Soft-RoCE VM (scripts/rxe-vm/run.sh, which exits 77 with the reason when it cannot be
# built here). The test's own exit code (0/1/77) is passed through; a VM that fails before
# the test runs (125) is reported as a skip.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$1
shift
if [[ -n ${IH_TEST_RDMA_ADDR:-} ]]; then exec "$@"; fi
IH_RXE_ENV="IH_SOURCE_DIR IH_BINARY_DIR IH_DEBUG IH_DEBUG_SUBSYS ${IH_RXE_ENV:-}" "$HERE/../../scripts/rxe-vm/run.sh" "$BUILD" "$@"
rc=$?
if ((rc == 125)); then
    # the VM itself failed (boot, 9p, rdma link): the machine's problem, not the code's
    echo "SKIP: the Soft-RoCE VM failed before the test ran (infrastructure; console tail above)"
    exit 77
fi
exit "$rc"
