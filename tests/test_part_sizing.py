"""Parts sized by rows, not windows: small strides, explicit part sizes, older atlases, bounded row groups."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enformer_batch import PredictConfig, predict, validate
from enformer_batch.demo import DemoChrom, write_demo_genome
from enformer_batch.genome import FastaSource
from enformer_batch.inference import InferenceSettings, Predictor
from enformer_batch.kinds.atlas import AtlasMode, read_part, resolve_windows_per_part
from enformer_batch.store import MANIFEST, MAX_ROW_GROUPS, ROW_GROUP_ROWS, codes_digest, part_table, serialise_table
from enformer_batch.windows import DEFAULT_ROWS_PER_PART, ENFORMER, plan_chromosome, plan_selection

from .conftest import read_atlas
from .test_trust import Interrupted, interrupt_after

# chrS: at stride 128 window 0 owns bins 0-448 (the nearest-centre rule) and window k >= 1 owns bin k + 448, so
# its 454 bins take 6 windows; ctg is shorter than a bin's worth of windows; chrL ends in a long N run, so its
# last windows are skipped (null rows).
SMALL_GENOME = (
    DemoChrom("chrS", 58_000, ((2_000, 2_500),)),
    DemoChrom("ctg", 700),
    DemoChrom("chrL", 400_000, ((150_000, 400_000),)),
)
RUN = dict(chroms=("chrS", "ctg"), stride=128, dtype="float32", batch_size=4, progress=False)


@pytest.fixture(scope="module")
def small_fasta(tmp_path_factory) -> str:
    return write_demo_genome(str(tmp_path_factory.mktemp("small") / "small.fa"), SMALL_GENOME)


def test_stride_128_parts_hold_the_target_rows_not_one_row_per_window():
    length = 5_000_000  # 39,063 bins; windows 1-38,614 own one bin each, window 0 owns 449
    per_part = resolve_windows_per_part(PredictConfig(fasta="", out="", stride=128), ENFORMER, 128)
    assert per_part == DEFAULT_ROWS_PER_PART
    parts = plan_chromosome("c", length, ENFORMER, 128, per_part)
    assert [p.n_rows for p in parts] == [14_784, 14_336, 39_063 - 14_784 - 14_336]
    assert [p.units for p in parts] == [14_336, 14_336, 38_615 - 2 * 14_336]
    # The default stride keeps the 16 windows a part held before parts were sized by rows.
    assert resolve_windows_per_part(PredictConfig(fasta="", out=""), ENFORMER, ENFORMER.output_span) == 16
    # An explicit windows_per_part wins over the row target.
    explicit = PredictConfig(fasta="", out="", stride=128, windows_per_part=16)
    assert resolve_windows_per_part(explicit, ENFORMER, 128) == 16
    assert len(plan_chromosome("c", length, ENFORMER, 128, 16)) == -(-38_615 // 16)


def test_a_genome_plan_at_stride_128_holds_parts_not_windows():
    """hg38-sized at stride 128: 24 million windows, planned as ~1,700 parts of a few numbers each."""
    import tracemalloc

    lengths = {f"chr{i}": 130_000_000 for i in range(24)}
    tracemalloc.start()
    try:
        parts = plan_selection(dict.fromkeys(lengths), lengths, ENFORMER, 128, DEFAULT_ROWS_PER_PART)
        totals = sum(p.units for p in parts), sum(p.n_rows for p in parts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    bins = -(-130_000_000 // 128)
    assert len(parts) == 24 * -(-(bins - 448) // DEFAULT_ROWS_PER_PART)
    assert totals == (24 * (bins - 448), 24 * bins)
    assert peak < 4 * 2**20  # a per-window plan would take gigabytes


def test_mode_rows_equal_the_per_window_stitching(small_fasta):
    """The atlas mode keeps only each window's written bins on the device and reads overlapping windows' bases
    once; its rows must be those of stitching full 896-bin predictions (store.part_table), bit for bit, and its
    codes digest the one parts recorded before."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predictor = Predictor(InferenceSettings(dtype="float32", batch_size=3), device="cpu")
        source = FastaSource(small_fasta)
        mode = AtlasMode(source, ENFORMER.input_length)
        # chrS at stride 128: four overlapping windows (one stretch of bases); chrL at the default stride: windows
        # 0 and 3, too far apart to share bases (two stretches), window 3 all N (skipped: null rows).
        plans = plan_chromosome("chrS", 58_000, ENFORMER, 128, 16, ((0, 2), (447, 452)))
        plans += plan_chromosome("chrL", 400_000, ENFORMER, ENFORMER.output_span, 16, ((0, 2), (2_700, 2_702)))
        assert [[w.k for w in p.windows] for p in plans] == [[0, 1, 2, 3], [0, 3]]
        for part in plans:
            codes = mode.read(part)
            assert mode.digest(codes) == codes_digest(read_part(source, part, ENFORMER.input_length))
            got = mode.table(part, mode.infer(predictor, part, codes), predictor.info)
            values, ran = predictor.predict(codes.stack())
            want = part_table(part, values, ran, predictor.info.track_names, "float32", ENFORMER.bin_size)
            assert got.equals(want), part
        assert got.column(2).null_count == 2 and len(mode.read(plans[1]).spans) == 2 * ENFORMER.input_length
    finally:
        torch.set_num_threads(threads)


def test_row_groups_per_part_are_bounded():
    def groups(rows: int) -> int:
        table = pa.table({"start": np.arange(rows, dtype=np.int64), "v": np.ones(rows, np.float32)})
        return pq.ParquetFile(pa.BufferReader(serialise_table(table))).metadata.num_row_groups

    assert groups(DEFAULT_ROWS_PER_PART) == 1
    assert groups(2 * ROW_GROUP_ROWS) == 2
    assert groups(40 * ROW_GROUP_ROWS) == MAX_ROW_GROUPS


def test_a_small_stride_atlas_is_exactly_once_and_validates(ray_cluster, small_fasta, tmp_path):
    out = tmp_path / "atlas"
    summary = predict(PredictConfig(fasta=small_fasta, out=str(out), rows_per_part=4, **RUN))
    report = validate(str(out), fasta=small_fasta)
    assert report.ok, report.table()
    rows = read_atlas(out)
    for c in SMALL_GENOME[:2]:
        assert list(rows["start"][rows["chrom"] == c.name]) == list(range(0, c.length, 128))  # each bin once
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["identity"]["windows_per_part"] == 4  # 4 rows of one-bin windows
    # chrS: windows [0, 4) write bins 0-451, [4, 8) 452-453 (windows 6 on own none); ctg: window 0 writes all
    # 6 bins, so its windows [4, 6) make no part.
    assert sorted(p["path"] for p in manifest["parts"]) == [
        "chrom=chrS/part-000000-000004.parquet", "chrom=chrS/part-000004-000008.parquet",
        "chrom=ctg/part-000000-000004.parquet"]
    assert summary.units == 6 + 1 and summary.rows == 454 + 6


def test_an_atlas_started_with_other_part_sizes_resumes_with_them(ray_cluster, small_fasta, tmp_path):
    """Before parts were sized by rows, atlases had 16 windows a part at any stride; one of them (here: 2
    windows a part) resumes with its recorded plan when re-run without a part size, and validates."""
    out = tmp_path / "atlas"
    with pytest.raises(Interrupted):
        predict(PredictConfig(fasta=small_fasta, out=str(out), windows_per_part=2, **RUN), on_part=interrupt_after(1))
    committed = json.loads((out / MANIFEST).read_text())
    assert committed["identity"]["windows_per_part"] == 2 and committed["status"] == "running"
    summary = predict(PredictConfig(fasta=small_fasta, out=str(out), **RUN))  # the default would be 14,336
    assert summary.resumed_parts == len(committed["parts"]) >= 1
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["identity"]["windows_per_part"] == 2 and manifest["status"] == "complete"
    assert summary.parts == 4  # chrS: windows [0, 2), [2, 4), [4, 6); ctg: [0, 2)
    assert {p["path"] for p in committed["parts"]} <= {p["path"] for p in manifest["parts"]}
    report = validate(str(out), fasta=small_fasta)
    assert report.ok, report.table()
