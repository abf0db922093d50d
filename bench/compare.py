#!/usr/bin/python3
"""bench/compare.py: our allreduce next to Open MPI and gloo, interleaved, on this machine.

    bench/compare.py BUILD_DIR [--rounds 3] [--ranks 2,4] [--sizes 32M,100M] [--rx-thread]

Each round runs, for every (ranks, size): bench_allreduce --algo ring and --algo hd,
bench_mpi_allreduce with Open MPI's default choice and its ring (4), segmented ring (5) and
Rabenseifner (6), and gloo through torch.distributed; with --rx-thread also our ring with the
tcp fabric's receive thread on (IH_COMM_RX_THREAD=1). Each round line ends with the 1-minute
load average when it finished. Programs alternate within a round, so
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
    ap.add_argument("--rx-thread", action="store_true", help="also run ours with IH_COMM_RX_THREAD=1")
    a = ap.parse_args()
    ours = os.path.join(a.build, "bench", "bench_allreduce")
    mpi = os.path.join(a.build, "bench", "bench_mpi_allreduce")
    have_mpi = os.path.exists(mpi) and shutil.which("mpirun")
    mpirun = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "btl", "tcp,self",
              "--mca", "btl_tcp_if_include", "lo", "--mca", "pml", "ob1"]
    res = {}

    per_round = {}  # (k, size) -> list of {contender: busbw} per round

    def add(key, v):
        res.setdefault(key, []).append(v)
        per_round.setdefault(key[:2], [{} for _ in range(a.rounds)])[rnd][key[2]] = v

    for rnd in range(a.rounds):
        for k in [int(x) for x in a.ranks.split(",")]:
            for size in a.sizes.split(","):
                mib = float(size.rstrip("MmBb"))
                variants = [("ring", "ring", None), ("hd", "hd", None)]
                if a.rx_thread:
                    variants.append(("ring rx-thread", "ring", {"IH_COMM_RX_THREAD": "1"}))
                for name, algo, env in variants:
                    r = run([ours, "--nproc", str(k), "--bytes", size, "--algo", algo], env=env)
                    if r:
                        add((k, size, f"ours {name}"), float(r["busbw_GBps"]))
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
                load = os.getloadavg()[0]
                print(f"# round {rnd + 1} k={k} {size}: {line} load={load:.1f}", flush=True)

    print("\n| ranks | size | contender | busbw GB/s (median) | runs |")
    print("|---|---|---|---|---|")
    for (k, size, name), v in sorted(res.items(), key=lambda x: (x[0][0], x[0][1], x[0][2])):
        print(f"| {k} | {size} | {name} | {statistics.median(v):.2f} | {' '.join(f'{x:.2f}' for x in v)} |")
    # "ours" = the better of our default ring and hd (the rx-thread variant is reported on its
    # own); "best peer" = the best of the Open MPI variants and gloo IN THE SAME ROUND.
    def ratios(rounds, mine):
        out = []
        for d in rounds:
            peers = [v for n, v in d.items() if n.startswith("mpi") or n == "gloo"]
            ours_v = [v for n, v in d.items() if n in mine]
            if peers and ours_v:
                out.append(max(ours_v) / max(peers))
        return out

    for (k, size), rounds in sorted(per_round.items()):
        for label, mine in (("ours", ("ours ring", "ours hd")), ("ours rx-thread", ("ours ring rx-thread",))):
            rs = ratios(rounds, mine)
            bk = [d["B/k (same run)"] for d in rounds if "B/k (same run)" in d]
            mv = [max(d[n] for n in mine if n in d) for d in rounds if any(n in d for n in mine)]
            if rs:
                print(f"k={k} {size}: {label}/best peer, median of per-round ratios = {statistics.median(rs):.2f}x "
                      f"(rounds: {' '.join(f'{x:.2f}' for x in rs)}); {label}/(B/k) = "
                      f"{statistics.median(mv) / statistics.median(bk) if bk else 0:.2f}")

if __name__ == "__main__":
    main()
