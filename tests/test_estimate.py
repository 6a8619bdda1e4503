"""The dry-run planner: exact tiling counts (a run's own plan), size and cost estimates, `plan` command."""

from __future__ import annotations

import numpy as np
import pytest

from enformer_batch.cli import main as cli_main
from enformer_batch.estimate import GPU_PROFILES, estimate_bytes, plan_run
from enformer_batch.store import part_table, serialise_table
from enformer_batch.windows import (
    DEFAULT_ROWS_PER_PART,
    ENFORMER,
    Tiling,
    plan_chromosome,
    windows_per_part_for_rows,
)

from .conftest import TEST_GENOME

SPAN = ENFORMER.output_span


def computed_windows(tiling: Tiling) -> int:
    """Windows owning at least one bin: at strides below the span the last ones may own none (never run)."""
    return sum(1 for k in range(tiling.n_windows) if tiling.owned_bins(k)[1] > tiling.owned_bins(k)[0])


@pytest.mark.parametrize("stride", [SPAN, SPAN // 2, 128 * 100])
def test_windows_and_bins_match_the_tiling(test_fasta, stride):
    plan = plan_run(test_fasta, stride=stride, windows_per_second=10, price_per_hour=1)
    tilings = {c.name: Tiling(ENFORMER, c.length, stride) for c in TEST_GENOME}
    assert [c.chrom for c in plan.chroms] == [c.name for c in TEST_GENOME]
    for chrom in plan.chroms:
        tiling = tilings[chrom.chrom]
        assert chrom.windows == computed_windows(tiling)
        assert chrom.bins == tiling.n_bins == -(-chrom.length // 128)
        # Parts sized by rows: ~14,336 bins each, whatever the stride; windows owning no bin make no part.
        per_part = windows_per_part_for_rows(DEFAULT_ROWS_PER_PART, ENFORMER, stride)
        assert chrom.parts == -(-computed_windows(tiling) // per_part)
    if stride == SPAN:
        assert plan.windows == sum(t.n_windows for t in tilings.values())
    assert plan.bins == sum(t.n_bins for t in tilings.values())


def test_chroms_and_regions_count_only_what_a_run_writes(test_fasta, tmp_path):
    assert [c.chrom for c in plan_run(test_fasta, chroms=["chrB"]).chroms] == ["chrB"]
    bed = tmp_path / "r.bed"
    bed.write_text("chrB\t1000\t1300\nchrB\t120000\t130000\nchrA\t0\t129\n")
    plan = plan_run(test_fasta, regions=str(bed))
    by = {c.chrom: c for c in plan.chroms}
    assert set(by) == {"chrA", "chrB"}
    # The same bins test_pipeline's region run writes: 2 on chrA, 4 + 79 on chrB, from 1 + 2 windows.
    assert by["chrA"].bins == 2 and by["chrB"].bins == 4 + 79
    assert by["chrA"].windows == 1 and by["chrB"].windows == 2


def test_track_count_comes_from_the_checkpoint_config(test_fasta):
    assert plan_run(test_fasta, model="demo").tracks == 12  # the demo model's human head
    assert plan_run(test_fasta, model="demo", head="mouse").tracks == 4
    assert plan_run(test_fasta, model="demo", tracks="0-3,7").tracks == 5
    assert plan_run(test_fasta).tracks == 5313  # the default: the full-size Enformer
    assert plan_run(test_fasta, model="enformer").tracks == 5313
    assert plan_run(test_fasta, model="enformer", head="mouse", n_tracks=100).tracks == 100
    with pytest.raises(ValueError, match="out of range"):
        plan_run(test_fasta, model="demo", tracks="12")


@pytest.mark.parametrize("dtype,tracks", [("float16", 12), ("float16", 400), ("float32", 400)])
def test_byte_estimate_is_close_to_a_real_part(dtype, tracks):
    """The estimate against store.serialise_table on a 16-window part of smooth positive values."""
    part = plan_chromosome("chr1", 16 * SPAN, ENFORMER, SPAN, 16)[0]
    rng = np.random.default_rng(0)
    shape = (len(part.windows), ENFORMER.output_bins, tracks)
    values = np.exp(rng.normal(0, 1, shape)).repeat(8, axis=1)[:, : ENFORMER.output_bins]
    values = values * (1 + 0.1 * rng.random(shape))
    names = [f"t{i}" for i in range(tracks)]
    table = part_table(part, values, np.ones(len(part.windows), bool), names, dtype, 128)
    actual = len(serialise_table(table))
    estimate = estimate_bytes(table.num_rows, 1, tracks, dtype)
    assert 0.8 < estimate / actual < 1.25, (estimate, actual)


def test_gpu_hours_and_cost(test_fasta):
    plan = plan_run(test_fasta, windows_per_second=2.0, price_per_hour=3.0, rc=True, shifts=(-1, 0, 1))
    assert plan.passes_per_window == 6
    assert plan.gpu_hours == pytest.approx(plan.windows * 6 / 2.0 / 3600)
    assert plan.cost == pytest.approx(plan.gpu_hours * 3.0)
    default = plan_run(test_fasta, gpu="H100")
    assert default.windows_per_second == GPU_PROFILES["H100"].windows_per_second
    assert default.price_per_hour == GPU_PROFILES["H100"].price_per_gpu_hour
    with pytest.raises(ValueError, match="no default figures"):
        plan_run(test_fasta, gpu="TPUv9")
    assert plan_run(test_fasta, gpu="TPUv9", windows_per_second=5, price_per_hour=1).gpu == "TPUv9"


def test_plan_command(test_fasta, tmp_path, capsys):
    assert cli_main(["plan", test_fasta, "--gpu", "A10G", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    windows = sum(Tiling(ENFORMER, c.length, SPAN).n_windows for c in TEST_GENOME)
    bins = sum(-(-c.length // 128) for c in TEST_GENOME)
    assert total.split()[2:4] == [f"{windows:,}", f"{bins:,}"]
    assert "ESTIMATE" in out and "A10G" in out and "5,313 × float32" in out
    # Without --model the plan is for the full-size Enformer, and it says so.
    assert "Enformer, full size" in out and "no --model" in out
    assert cli_main(["plan", test_fasta, "--model", "demo", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "12 × float32" in out and "demo" in out and "no --model" not in out
    sizes = tmp_path / "genome.chrom.sizes"
    sizes.write_text("".join(f"{c.name}\t{c.length}\n" for c in TEST_GENOME))
    assert cli_main(["plan", str(sizes), "--model", "enformer"]) == 0
    assert f"{windows:,}" in capsys.readouterr().out
    assert cli_main(["plan", "--list-gpus", test_fasta]) == 0
    assert "H100" in capsys.readouterr().out
    assert cli_main(["plan", test_fasta, "--gpu", "nope"]) == 2
