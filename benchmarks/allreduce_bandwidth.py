"""All-reduce bandwidth of introspect's communicator against torch.distributed, side by side in one run.

    ~/.cache/introspect/venv/bin/python benchmarks/allreduce_bandwidth.py build/bin/bench_allreduce [--ranks 2]
    ~/.cache/introspect/venv/bin/python benchmarks/allreduce_bandwidth.py build/bin/bench_allreduce --nccl [--ranks 1]

CPU: introspect's MPI engine (mpirun -np RANKS) against torch.distributed's gloo backend (RANKS processes on
localhost), float32 sums on host buffers. --nccl: introspect's NCCL engine against torch.distributed's nccl
backend on device buffers (one GPU per rank). Both report nccl-tests' algbw = bytes / time and
busbw = algbw * 2 (n - 1) / n (0 on one rank) over the same sizes; the last column is introspect's time over the
peer's (below 1: introspect is faster).
"""
import argparse
import json
import os
import subprocess
import sys
import time


def peer(rank, world, backend, sizes, iters, port, queue):
    import torch
    import torch.distributed as torch_dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group(backend, rank=rank, world_size=world)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    out = {}
    for nbytes in sizes:
        x = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        for _ in range(3):
            torch_dist.all_reduce(x)
        torch_dist.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            torch_dist.all_reduce(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = torch.tensor([(time.perf_counter() - t0) / iters], dtype=torch.float64)
        torch_dist.all_reduce(seconds.to(device), op=torch_dist.ReduceOp.MAX)
        out[nbytes] = seconds.item()
    if rank == 0:
        queue.put(out)
    torch_dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench")
    ap.add_argument("--nccl", action="store_true")
    ap.add_argument("--ranks", type=int, default=None)
    ap.add_argument("--max-mb", type=float, default=64)
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    ranks = a.ranks or (1 if a.nccl else 2)

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [a.bench, "--max-mb", str(a.max_mb), "--iters", str(a.iters)] + (["--nccl"] if a.nccl else [])
    if ranks > 1 or not a.nccl:
        cmd = ["mpirun", "--bind-to", "none", "--oversubscribe", "-np", str(ranks)] + cmd
    text = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    ours = {r["bytes"]: r for r in (json.loads(l) for l in text.splitlines() if l.startswith("{"))}

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    backend = "nccl" if a.nccl else "gloo"
    procs = [ctx.Process(target=peer, args=(r, ranks, backend, sorted(ours), a.iters, port, queue)) for r in range(ranks)]
    for p in procs:
        p.start()
    theirs = queue.get()
    for p in procs:
        p.join()

    engine = next(iter(ours.values()))["engine"]
    print(f"all_reduce float32 sum, {ranks} rank(s): introspect {engine} vs torch.distributed {backend}")
    print(f"{'bytes':>12} {'ours_us':>10} {'ours_busbw':>11} {'ours_algbw':>11} {'torch_us':>10} {'torch_algbw':>11} {'ours/torch':>10}")
    for nbytes in sorted(ours):
        o, t = ours[nbytes], theirs[nbytes]
        t_algbw = nbytes / t / 1e9
        print(f"{nbytes:>12} {o['time_us']:>10.1f} {o['busbw_GBps']:>11.3f} {o['algbw_GBps']:>11.3f} "
              f"{t * 1e6:>10.1f} {t_algbw:>11.3f} {o['time_us'] / (t * 1e6):>10.2f}")


if __name__ == "__main__":
    sys.exit(main())
