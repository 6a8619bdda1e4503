"""The Parquet writer alone: stitching (``store.part_table``) and serialising a part at 5,313 float16 tracks.

    python benchmarks/writer.py            # 16-window parts (14,336 rows), 3 repeats per setting
    python benchmarks/writer.py --quick    # 4-window parts, fewer settings (smoke test, < 60 s)

Times ``part_table`` and ``serialise_table`` (what ``OutputStore.write_part`` does before publishing), then
``OutputStore.write_part`` to a local temporary directory, and compares Parquet settings side by side on the
same table: size per bin, seconds per part, windows per CPU-second (the writer runs in a worker beside the
model, so CPU time is what it takes from prediction) and whether DuckDB and pyarrow read the file back.

The values are synthetic (smooth positive signal plus noise, rounded to float16), so absolute sizes are
indicative only: real predictions are smoother and compress better.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from enformer_batch.store import ROW_GROUP_ROWS, OutputStore, part_table, serialise_table  # noqa: E402
from enformer_batch.windows import ENFORMER, plan_chromosome  # noqa: E402

TRACKS = 5313


def synthetic_predictions(windows: int, tracks: int, seed: int = 0) -> np.ndarray:
    """``[windows, 896, tracks]`` float16: a per-track level times a slow signal along bins, plus noise."""
    rng = np.random.default_rng(seed)
    bins = ENFORMER.output_bins
    level = rng.gamma(1.0, 1.0, size=(1, 1, tracks)).astype(np.float32)
    signal = 1 + np.sin(np.arange(windows * bins, dtype=np.float32) / 50.0).reshape(windows, bins, 1)
    noise = rng.gamma(2.0, 0.25, size=(windows, bins, tracks)).astype(np.float32)
    return (level * signal * noise).astype(np.float16)


def settings_to_compare(table: pa.Schema, quick: bool) -> dict[str, dict]:
    f32 = [f.name for f in table if pa.types.is_float32(f.type)]
    f16 = [f.name for f in table if pa.types.is_float16(f.type)]
    base = dict(compression="zstd", use_dictionary=False, use_byte_stream_split=f32 or False,
                write_statistics=["start", "end"], row_group_size=ROW_GROUP_ROWS)
    cases = {
        f"current (zstd, no dictionary, row group {ROW_GROUP_ROWS:,})": base,
        "row group 4096 (before 2026-11-25)": {**base, "row_group_size": 4096},
        "zstd level 1": {**base, "compression_level": 1},
        "zstd level 3": {**base, "compression_level": 3},
        "lz4": {**base, "compression": "lz4"},
        "no compression": {**base, "compression": "none"},
        "row group 7168 (half a 16-window part)": {**base, "row_group_size": 7168},
        "lz4, row group 4096": {**base, "row_group_size": 4096, "compression": "lz4"},
        "row group 1024": {**base, "row_group_size": 1024},
        "BYTE_STREAM_SPLIT on float16 (DuckDB?)": {**base, "use_byte_stream_split": f16 + f32},
        "pyarrow defaults (dictionary, all statistics)": dict(compression="snappy"),
    }
    if quick:
        keep = ("current", "row group 4096", "BYTE_STREAM_SPLIT")
        cases = {k: v for k, v in cases.items() if k.startswith(keep)}
    return cases


def read_checks(path: str, first_track: str) -> tuple[str, str]:
    """(DuckDB, pyarrow): 'ok' when the file reads back with the right row count and a track's sum."""
    import duckdb

    expected = pq.read_table(path, columns=[first_track]).column(0)
    try:
        rows, total = duckdb.sql(f"select count(*), sum(\"{first_track}\") from read_parquet('{path}')").fetchall()[0]
        want = float(np.asarray(expected.to_numpy(zero_copy_only=False), dtype=np.float64).sum())
        duck = "ok" if rows == len(expected) and abs(total - want) <= 1e-3 * abs(want) else f"wrong ({rows} rows)"
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        duck = f"fails: {type(e).__name__}"
    try:
        pq.read_table(path)
        arrow = "ok"
    except Exception as e:  # noqa: BLE001
        arrow = f"fails: {type(e).__name__}"
    return duck, arrow


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds of ``fn()`` and its last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--windows", type=int, default=16, help="windows per part (the pipeline's default is 16)")
    ap.add_argument("--tracks", type=int, default=TRACKS)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.quick:
        args.windows, args.repeats = 4, 1

    length = args.windows * ENFORMER.output_span - 1000  # a short last bin, as real chromosomes have
    (part,) = plan_chromosome("chr1", length, ENFORMER, ENFORMER.output_span, args.windows)
    predictions = synthetic_predictions(args.windows, args.tracks)
    ran = np.ones(args.windows, dtype=bool)
    names = [f"track_{i:04d}" for i in range(args.tracks)]
    workdir = tempfile.mkdtemp(prefix="bench-writer-")
    load = os.getloadavg()
    try:
        stitch_wall, stitch_cpu, table = timed(
            lambda: part_table(part, predictions, ran, names, "float16", ENFORMER.bin_size), args.repeats)
        ser_wall, ser_cpu, data = timed(lambda: serialise_table(table), args.repeats)
        store = OutputStore(workdir)
        write_wall, write_cpu, record = timed(lambda: store.write_part(part, table), args.repeats)
        rows = table.num_rows
        print(f"\nbenchmarks/writer.py — {time.strftime('%Y-%m-%d %H:%M')}, pyarrow {pa.__version__}, "
              f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"one part: {args.windows} windows, {rows:,} rows x {args.tracks:,} float16 tracks "
              f"({predictions.nbytes / 2**20:.0f} MiB of values); median of {args.repeats}\n")
        stage_rows = [
            ("part_table (stitch → Arrow)", stitch_wall, stitch_cpu),
            ("serialise_table (current settings)", ser_wall, ser_cpu),
            ("part_table + serialise_table", stitch_wall + ser_wall, stitch_cpu + ser_cpu),
            ("OutputStore.write_part (serialise + sha256 + fsync + rename)", write_wall, write_cpu),
        ]
        print("| stage | s/part (wall) | CPU s/part | windows per CPU-second |\n|---|---|---|---|")
        for name, w, c in stage_rows:
            print(f"| {name} | {w:.3f} | {c:.3f} | {args.windows / c:.1f} |")
        end_to_end = args.windows / (stitch_cpu + write_cpu)
        print(f"\nwriter per core (part_table + write_part, CPU time): {end_to_end:.1f} windows/s → goal ≥ 15: "
              f"{'met' if end_to_end >= 15 else 'NOT met'}; {len(data) / rows:.0f} bytes per bin "
              f"({len(data) / rows / args.tracks:.2f} per value)\n")

        print("| Parquet setting | bytes/bin | bytes/value | serialise s/part | windows per CPU-second "
              "(stitch + serialise) | DuckDB reads | pyarrow reads |\n|---|---|---|---|---|---|---|")
        for name, kwargs in settings_to_compare(table.schema, args.quick).items():
            def write(kwargs=kwargs) -> bytes:
                sink = pa.BufferOutputStream()
                pq.write_table(table, sink, **kwargs)
                return sink.getvalue().to_pybytes()

            wall, cpu, blob = timed(write, args.repeats)
            path = os.path.join(workdir, "probe.parquet")
            with open(path, "wb") as f:
                f.write(blob)
            duck, arrow = read_checks(path, names[0])
            print(f"| {name} | {len(blob) / rows:.0f} | {len(blob) / rows / args.tracks:.2f} | {wall:.3f} | "
                  f"{args.windows / (stitch_cpu + cpu):.1f} | {duck} | {arrow} |")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
