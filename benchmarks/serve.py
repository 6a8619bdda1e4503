"""Latency of ``enformer-batch serve``: p50/p95 per request and requests/s for 1, 4 and 16 concurrent clients.

    python benchmarks/serve.py                 # SNV edits on the demo model, this machine's CPU
    python benchmarks/serve.py --requests 4    # smoke test

A server (``enformer_batch.serve.server.Server``, one replica, the demo model) answers ``POST /api/edit`` over
HTTP on the loopback, as the page and curl call it; clients are threads, each sending its requests one after
another. Two workloads:

* new position: every SNV at a position not asked before, as when scanning a region: its reference window is
  new, so the reference is predicted in full and the alternate through the near-change path.
* same position: SNVs at a few positions asked again (the other bases of a clicked base): the reference's conv
  tower comes from the replica's cache.

Printed: one table row per (workload, clients): requests, p50 and p95 latency (ms, as the client sees it,
queueing included) and requests/s over the level. Warm-up requests come first and are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def post(port: int, body: dict) -> float:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/edit", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = json.loads(response.read())
    if answer.get("status") != "ok":
        raise RuntimeError(f"edit not scored: {answer}")
    return time.perf_counter() - started


def snvs(sequence: str, chrom: str, positions: list[int]) -> list[dict]:
    out = []
    for q in positions:
        ref = sequence[q]
        alt = "ACGT"[("ACGT".index(ref) + 1 + len(out)) % 4]
        if alt == ref:
            alt = "ACGT"[("ACGT".index(ref) + 1) % 4]
        out.append({"chrom": chrom, "start": q, "end": q + 1, "sequence": alt, "tracks": ["DEMO0000001"]})
    return out


def level(port: int, bodies: list[dict], clients: int) -> tuple[list[float], float]:
    """Send ``bodies`` from ``clients`` threads (round-robin); each request's latency and the wall time."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client(mine: list[dict]) -> None:
        try:
            for body in mine:
                t = post(port, body)
                with lock:
                    latencies.append(t)
        except BaseException as e:  # noqa: BLE001 - reported after the level
            errors.append(e)

    threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return latencies, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16, help="requests per level (at least the clients)")
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import torch

    from enformer_batch.demo import DemoChrom, write_demo_genome
    from enformer_batch.serve.server import ServeOptions, Server

    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        fasta = write_demo_genome(os.path.join(tmp, "genome.fa"), (DemoChrom("chr1", 400_000),))
        sequence = Path(fasta).read_text().split("\n", 1)[1].replace("\n", "").upper()
        rng = np.random.default_rng(0)
        candidates = [int(q) for q in rng.permutation(np.arange(1_000, 399_000)) if sequence[q] in "ACGT"]
        with Server(ServeOptions(fasta=fasta, port=0, threads=args.threads, queue_length=64)) as server:
            port = server.port
            for body in snvs(sequence, "chr1", candidates[:3]):  # warm-up: weights paged in, first towers
                post(port, body)
            used = 3
            rows = []
            for workload in ("new position", "same position"):
                for clients in levels:
                    n = max(args.requests, clients)
                    if workload == "new position":
                        positions = candidates[used : used + n]
                        used += n
                    else:  # a few clicked bases, each asked again: the cached reference towers serve them
                        hot = candidates[:2]
                        positions = [hot[i % len(hot)] for i in range(n)]
                    latencies, wall = level(port, snvs(sequence, "chr1", positions), clients)
                    ms = np.array(latencies) * 1000
                    rows.append((workload, clients, n, np.percentile(ms, 50), np.percentile(ms, 95), n / wall))
                    print(f"  {workload}, {clients} client(s): done", file=sys.stderr, flush=True)
    print(f"serve, demo model, SNV edits over HTTP; {torch.get_num_threads()} torch thread(s), "
          f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}")
    print("| workload | clients | requests | p50 ms | p95 ms | requests/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for workload, clients, n, p50, p95, rate in rows:
        print(f"| {workload} | {clients} | {n} | {p50:,.0f} | {p95:,.0f} | {rate:.2f} |")


if __name__ == "__main__":
    main()
