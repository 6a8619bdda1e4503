"""Query latency: a 1-Mb, 1-track lookup in an atlas, through ``open_atlas(...).query`` (and DuckDB, for scale).

    python benchmarks/query.py [--mb 4] [--tracks 512] [--runs 20]
    python benchmarks/query.py --url s3://bucket/atlas --storage-option endpoint_url=http://... [--runs 20]

Without ``--url`` it writes a synthetic atlas first (random values, no model: parts built with
``store.part_table``/``OutputStore.write_part`` and a complete manifest, same layout as a real run) into a
temporary directory. Each row of the table is the median (and min/max) of ``--runs`` timed repetitions after
one untimed warm-up; "cold" rows open the atlas again each time (manifest read included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from enformer_batch import open_atlas  # noqa: E402
from enformer_batch.engine import identity_digest  # noqa: E402
from enformer_batch.store import MANIFEST_FORMAT, OutputStore, manifest_parts, part_table  # noqa: E402
from enformer_batch.windows import ENFORMER, plan_chromosome  # noqa: E402


def write_synthetic_atlas(out: str, mb: float, n_tracks: int, dtype: str = "float16") -> dict[str, int]:
    """A complete atlas of ``mb`` megabases (chr1 three quarters, chr2 the rest) with random values."""
    total = int(mb * 1_000_000)
    lengths = {"chr1": total * 3 // 4 + 77, "chr2": total - total * 3 // 4}  # +77: a short last bin
    geometry, stride, per_part = ENFORMER, ENFORMER.output_span, 16
    names = [f"SYN{i:07d}" for i in range(n_tracks)]
    store = OutputStore(out)
    rng = np.random.default_rng(0)
    records = {}
    for chrom, length in lengths.items():
        for part in plan_chromosome(chrom, length, geometry, stride, per_part):
            shape = (len(part.windows), geometry.output_bins, n_tracks)
            predictions = rng.gamma(2.0, 0.5, size=shape).astype(np.float32)
            table = part_table(part, predictions, np.ones(len(part.windows), bool), names, dtype, geometry.bin_size)
            record = store.write_part(part, table)
            records[record.path] = record
    identity = {
        "engine_version": "benchmark",
        "model": {"id": "synthetic", "weights_sha256": "", "head": "human"},
        "fasta": {"name": "synthetic.fa", "chromosomes": lengths},
        "chromosomes": list(lengths),
        "regions": None,
        "geometry": {"input_length": geometry.input_length, "bin_size": geometry.bin_size,
                     "output_bins": geometry.output_bins},
        "stride": stride,
        "windows_per_part": per_part,
        "tracks": [{"index": i, "name": n, "description": f"synthetic {i}"} for i, n in enumerate(names)],
        "dtype": dtype,
    }
    store.write_manifest({"format": MANIFEST_FORMAT, "identity": identity, "run": identity_digest(identity),
                          "status": "complete", "parts": manifest_parts(records)})
    store.mark_success()
    return lengths


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm-up: imports, page cache, connection pools
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="an existing atlas (directory or fsspec URL such as s3://...)")
    ap.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--mb", type=float, default=4.0, help="synthetic atlas size in megabases")
    ap.add_argument("--tracks", type=int, default=512, help="tracks in the synthetic atlas")
    ap.add_argument("--span", type=int, default=1_000_000, help="query length in bp")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    options = dict(kv.split("=", 1) for kv in args.storage_option)

    tmp = None
    url = args.url
    if url is None:
        tmp = tempfile.TemporaryDirectory(prefix="atlas-bench-")
        url = os.path.join(tmp.name, "atlas")
        t0 = time.perf_counter()
        write_synthetic_atlas(url, args.mb, args.tracks)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(url) for f in fs)
        print(f"synthetic atlas: {args.mb:g} Mb, {args.tracks} tracks, {size / 1e6:.1f} MB, "
              f"written in {time.perf_counter() - t0:.1f} s")

    atlas = open_atlas(url, options)
    chrom = max(atlas.chroms, key=atlas.chroms.get)
    length = atlas.chroms[chrom]
    start = max(0, length // 2 - args.span // 2)
    end = min(length, start + args.span)
    names = atlas.track_names
    one, many = names[len(names) // 2], names[: min(16, len(names))]
    rows = atlas.query(chrom, start, end, tracks=[one]).num_rows
    print(f"atlas {url}: {len(names)} tracks; query {chrom}:{start}-{end} ({end - start:,} bp, {rows} rows)\n")

    cases: list[tuple[str, Callable[[], object]]] = [
        ("open_atlas (manifest only)", lambda: open_atlas(url, options)),
        ("query, 1 track", lambda: atlas.query(chrom, start, end, tracks=[one])),
        ("open + query, 1 track (cold)", lambda: open_atlas(url, options).query(chrom, start, end, tracks=[one])),
        (f"query, {len(many)} tracks", lambda: atlas.query(chrom, start, end, tracks=many)),
    ]
    if "://" not in url or url.startswith("file://"):
        try:
            import duckdb

            from enformer_batch.store import chrom_dir

            sql = (f"select start, \"end\", \"{one}\" from read_parquet('{atlas.store.root}/{chrom_dir(chrom)}/"
                   f"*.parquet') where \"end\" > {start} and start < {end} order by start")
            def run_duckdb():
                result = duckdb.sql(sql).arrow()  # a RecordBatchReader since DuckDB 1.4
                return result.read_all() if hasattr(result, "read_all") else result

            cases.append(("DuckDB, same rows (reference)", run_duckdb))
        except ImportError:
            pass

    width = max(len(c[0]) for c in cases)
    print(f"{'case':<{width}}  {'median ms':>10}  {'min ms':>8}  {'max ms':>8}   (runs={args.runs})")
    for label, fn in cases:
        t = timed(fn, args.runs)
        print(f"{label:<{width}}  {statistics.median(t) * 1e3:>10.1f}  {min(t) * 1e3:>8.1f}  {max(t) * 1e3:>8.1f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
