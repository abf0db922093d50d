#!/usr/bin/python3
"""bench/peers/gloo_allreduce.py: torch.distributed gloo all_reduce (its ring), timed like
bench_allreduce (verify once with integer-valued floats, warm up, barrier before each repeat,
slowest rank's time, median of R), for side-by-side runs (bench/README.md):

    GLOO_SOCKET_IFNAME=lo /usr/bin/python3 bench/peers/gloo_allreduce.py --nproc 2 --mib 100
"""
import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, k, port, nbytes, reps, out):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=k)
    n = nbytes // 4
    idx = torch.arange(n, dtype=torch.int64)
    t = ((rank * 7 + idx * 13) % 17 - 8).to(torch.float32)
    dist.all_reduce(t)
    ref = sum(((q * 7 + idx * 13) % 17 - 8) for q in range(k)).to(torch.float32)
    wrong = torch.tensor([float((t != ref).sum())])
    dist.all_reduce(wrong)
    for _ in range(3):
        dist.all_reduce(t)
    times = torch.zeros(reps, dtype=torch.float64)
    for i in range(reps):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(t)
        times[i] = time.perf_counter() - t0
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    if rank == 0:
        med = statistics.median(times.tolist())
        algbw = nbytes / med / 1e9
        busbw = algbw * 2 * (k - 1) / k
        print(f"# gloo all_reduce: size(B) R time(us) algbw(GB/s) busbw(GB/s) #wrong; busbw = algbw*2(k-1)/k")
        print(f"  {nbytes} {reps} {med*1e6:.1f} {algbw:.3f} {busbw:.3f} {int(wrong.item())}")
        print(f"RESULT peer=gloo ranks={k} bytes={nbytes} busbw_GBps={busbw:.3f}", flush=True)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--mib", type=float, default=100)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    mp.spawn(worker, args=(a.nproc, port, int(a.mib * 1048576) // 4 * 4, a.reps, None), nprocs=a.nproc)


if __name__ == "__main__":
    main()
