#!/usr/bin/python3
"""bench/compare.py: our allreduce next to Open MPI and gloo, interleaved, on this machine.

    bench/compare.py BUILD_DIR [--rounds 3] [--ranks 2,4] [--sizes 32M,100M]

Each round runs, for every (ranks, size): bench_allreduce --algo ring and --algo hd,
bench_mpi_allreduce with Open MPI's default choice and its ring (4), segmented ring (5) and
Rabenseifner (6), and gloo through torch.distributed. Programs alternate within a round, so
a noisy neighbour hurts every contender alike. Prints per-round busbw lines and then the
median over rounds as a markdown table, with B/k from bench_allreduce's own same-run
measurement (busbw = algbw * 2(k-1)/k everywhere; GB = 1e9 B).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env=None, timeout=600):
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=e, timeout=timeout)
    m = re.search(r"^RESULT .*$", p.stdout, re.M)
    if p.returncode or not m:
        print(f"# FAILED ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}", file=sys.stderr)
        return None
    return dict(kv.split("=", 1) for kv in m.group(0).split()[1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ranks", default="2,4")
    ap.add_argument("--sizes", default="32M,100M")
    a = ap.parse_args()
    ours = os.path.join(a.build, "bench", "bench_allreduce")
    mpi = os.path.join(a.build, "bench", "bench_mpi_allreduce")
    have_mpi = os.path.exists(mpi) and shutil.which("mpirun")
    mpirun = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "btl", "tcp,self",
              "--mca", "btl_tcp_if_include", "lo", "--mca", "pml", "ob1"]
    res = {}

    def add(key, v):
        res.setdefault(key, []).append(v)

    for rnd in range(a.rounds):
        for k in [int(x) for x in a.ranks.split(",")]:
            for size in a.sizes.split(","):
                mib = float(size.rstrip("MmBb"))
                for algo in ("ring", "hd"):
                    r = run([ours, "--nproc", str(k), "--bytes", size, "--algo", algo])
                    if r:
                        add((k, size, f"ours {algo}"), float(r["busbw_GBps"]))
                        add((k, size, "B/k (same run)"), float(r["tcp_duplex_GBps"]) / k)
                if have_mpi:
                    for name, alg in (("mpi default", None), ("mpi ring", 4), ("mpi seg-ring", 5), ("mpi rabenseifner", 6)):
                        extra = [] if alg is None else ["--mca", "coll_tuned_use_dynamic_rules", "1",
                                                        "--mca", "coll_tuned_allreduce_algorithm", str(alg)]
                        r = run(mpirun + ["-np", str(k)] + extra + [mpi, size, "10"])
                        if r:
                            add((k, size, name), float(r["busbw_GBps"]))
                r = run(["/usr/bin/python3", os.path.join(HERE, "peers", "gloo_allreduce.py"), "--nproc", str(k),
                         "--mib", str(mib), "--reps", "10"], env={"GLOO_SOCKET_IFNAME": "lo"})
                if r:
                    add((k, size, "gloo"), float(r["busbw_GBps"]))
                line = " ".join(f"{n}={v[-1]:.2f}" for (kk, ss, n), v in res.items() if kk == k and ss == size)
                print(f"# round {rnd + 1} k={k} {size}: {line}", flush=True)

    print("\n| ranks | size | contender | busbw GB/s (median) | runs |")
    print("|---|---|---|---|---|")
    for (k, size, name), v in sorted(res.items(), key=lambda x: (x[0][0], x[0][1], x[0][2])):
        print(f"| {k} | {size} | {name} | {statistics.median(v):.2f} | {' '.join(f'{x:.2f}' for x in v)} |")
    for k in sorted({k for k, _, _ in res}):
        for size in sorted({s for kk, s, _ in res if kk == k}):
            med = {n: statistics.median(v) for (kk, ss, n), v in res.items() if kk == k and ss == size}
            peers = [v for n, v in med.items() if n.startswith("mpi") or n == "gloo"]
            best_ours = max([v for n, v in med.items() if n.startswith("ours")], default=0)
            if peers and best_ours:
                bk = med.get("B/k (same run)", 0)
                print(f"k={k} {size}: ours/best peer = {best_ours / max(peers):.2f}x; ours/(B/k) = "
                      f"{best_ours / bk if bk else 0:.2f}")


if __name__ == "__main__":
    main()
