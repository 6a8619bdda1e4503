"""What the issue-15 safeguards cost: the codes digest per part, and resume's check of committed parts.

    python benchmarks/trust.py             # 1,700 parts (an hg38 atlas at 16 windows per part)
    python benchmarks/trust.py --quick     # 200 parts

Prints one table: sha256 of a part's base codes (16 windows, what each replica hashes before writing), the
lease's acquire + release on a local directory, and ``OutputStore.intact_parts`` over N committed parts with
every version token matching (a normal resume: one listing) and with every token changed (a copied atlas:
each part is re-read and checksummed). Parts are small stand-ins (64 kB; real ones are ~100-200 MB), so the
"all changed" row is a floor: its cost grows with the atlas' bytes, while the "tokens match" row does not.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from enformer_batch.demo import DemoChrom, write_demo_genome  # noqa: E402
from enformer_batch.genome import FastaSource  # noqa: E402
from enformer_batch.kinds.atlas import read_part  # noqa: E402
from enformer_batch.lease import Lease  # noqa: E402
from enformer_batch.store import OutputStore, PartRecord, codes_digest  # noqa: E402
from enformer_batch.windows import ENFORMER, plan_selection  # noqa: E402


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_parts = 200 if args.quick else 1700
    rows = []

    codes = np.random.default_rng(0).integers(0, 5, size=(16, ENFORMER.input_length), dtype=np.uint8)
    t = timed(lambda: codes_digest(codes), 5)
    rate = f"{codes.nbytes / t / 1e6:.0f} MB/s"
    rows.append(("codes_digest, one 16-window part (3.1 MB of codes)", f"{t * 1e3:.1f} ms", rate))

    root = tempfile.mkdtemp(prefix="trust-bench-")
    try:
        store = OutputStore(os.path.join(root, "atlas"))
        t = timed(lambda: Lease(store, log=lambda m: None).acquire().release(), 5)
        rows.append(("lease acquire + release (local)", f"{t * 1e3:.1f} ms", ""))

        # What resume's genome check does per committed part: read its windows' codes, then digest them.
        chrom = DemoChrom("chrZ", 2_000_000)
        fasta = FastaSource(write_demo_genome(os.path.join(root, "g.fa"), (chrom,)))
        part = plan_selection({"chrZ": None}, fasta.lengths(), ENFORMER, ENFORMER.output_span, 16)[0]
        t = timed(lambda: codes_digest(read_part(fasta, part, ENFORMER.input_length)))
        rows.append((f"genome check of one part: read {len(part.windows)} windows + digest", f"{t * 1e3:.0f} ms",
                     f"{len(part.windows) * ENFORMER.input_length / t / 1e6:.0f} Mbp/s"))

        payload = os.urandom(64 * 1024)
        records = {}
        for i in range(n_parts):
            path = f"chrom=chr{i % 24}/part-{i:06d}-{i + 1:06d}.parquet"
            token = store.publish(path, payload)
            records[path] = PartRecord(path, f"chr{i % 24}", i, i + 1, 1, len(payload),
                                       hashlib.sha256(payload).hexdigest(), token)
        t = timed(lambda: store.intact_parts(records))
        rows.append((f"resume check, {n_parts} parts, tokens match", f"{t * 1e3:.0f} ms",
                     f"{t / n_parts * 1e6:.0f} us/part"))
        stale = {p: PartRecord(**{**r.__dict__, "token": "stat:0:0:0"}) for p, r in records.items()}
        t = timed(lambda: store.intact_parts(stale))
        rows.append((f"resume check, {n_parts} parts, all tokens changed (64-kB parts)", f"{t * 1e3:.0f} ms",
                     f"{t / n_parts * 1e6:.0f} us/part"))
    finally:
        shutil.rmtree(root)

    width = max(len(r[0]) for r in rows)
    print(f"benchmarks/trust.py — {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs")
    print(f"{'what'.ljust(width)}  {'time':>9}  rate")
    for what, t, rate in rows:
        print(f"{what.ljust(width)}  {t:>9}  {rate}")


if __name__ == "__main__":
    main()
