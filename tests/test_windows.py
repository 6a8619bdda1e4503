"""Tiling and stitching against a brute-force reading of the contract."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enformer_batch.windows import ENFORMER, Geometry, Tiling, merge_ranges, n_bins, plan_chromosome

SMALL = Geometry(input_length=64 * 16 + 2 * 8 * 16, bin_size=16, output_bins=64)  # same arithmetic, tiny


def brute_force_owner(geometry: Geometry, length: int, stride: int) -> list[int]:
    """For each bin, the window whose output centre is nearest the bin centre (ties: lower k)."""
    n_windows = -(-length // stride)
    owners = []
    for b in range(n_bins(length, geometry.bin_size)):
        centre = (b + 0.5) * geometry.bin_size
        best = None
        for k in range(n_windows):
            lo, hi = k * stride, k * stride + geometry.output_span
            if lo <= b * geometry.bin_size and (b + 1) * geometry.bin_size <= hi:
                d = abs(centre - (lo + hi) / 2)
                if best is None or d < best[0]:
                    best = (d, k)
        assert best is not None, "every bin lies inside some window's output"
        owners.append(best[1])
    return owners


geometries = st.sampled_from([SMALL, Geometry(input_length=40 * 8, bin_size=8, output_bins=24)])


@st.composite
def tilings(draw):
    g = draw(geometries)
    stride = draw(st.integers(1, g.output_bins)) * g.bin_size
    length = draw(
        st.one_of(
            st.integers(1, g.bin_size - 1),  # shorter than a bin
            st.integers(1, g.output_span),  # shorter than one window
            st.integers(1, 12).map(lambda m: m * stride),  # exact multiples of the stride
            st.integers(1, 12 * g.output_span),
        )
    )
    return Tiling(g, length, stride)


@given(tilings())
@settings(max_examples=300, deadline=None)
def test_owned_bins_match_brute_force_and_cover_exactly_once(t: Tiling):
    owners = brute_force_owner(t.geometry, t.length, t.stride)
    got = [None] * t.n_bins
    for k in range(t.n_windows):
        lo, hi = t.owned_bins(k)
        out_lo, out_hi = t.output_interval(k)
        assert out_lo <= lo * t.geometry.bin_size and hi * t.geometry.bin_size <= out_hi or lo == hi
        for b in range(lo, hi):
            assert got[b] is None, "bin written twice"
            got[b] = k
    assert got == owners
    assert [t.window_of_bin(b) for b in range(t.n_bins)] == owners


@given(tilings(), st.data())
@settings(max_examples=200, deadline=None)
def test_region_plan_writes_exactly_the_whole_run_rows(t: Tiling, data):
    owners = brute_force_owner(t.geometry, t.length, t.stride)
    raw = data.draw(st.lists(st.tuples(st.integers(0, t.n_bins), st.integers(0, t.n_bins)), max_size=4))
    wanted = merge_ranges((min(a, b), max(a, b)) for a, b in raw)
    wanted_bins = sorted({b for lo, hi in wanted for b in range(lo, hi)})
    for windows_per_part in (1, 3):
        parts = plan_chromosome("c", t.length, t.geometry, t.stride, windows_per_part, wanted)
        written = [(b, w.k) for p in parts for w in p.windows for lo, hi in w.emit for b in range(lo, hi)]
        assert [b for b, _ in written] == wanted_bins  # sorted, each once
        assert all(owners[b] == k for b, k in written)  # the same window as the whole-genome run
        for p in parts:
            assert p.first_window % windows_per_part == 0
            assert p.end_window == min(p.first_window + windows_per_part, t.n_windows)
            assert all(p.first_window <= w.k < p.end_window for w in p.windows)
            # A plan counts its windows and rows without listing them; the counts must be the listed ones.
            assert p.units == len(p.windows) and p.n_rows == sum(w.n_rows for w in p.windows)


def test_enformer_geometry_and_default_stride():
    assert (ENFORMER.input_length, ENFORMER.bin_size, ENFORMER.output_bins) == (196_608, 128, 896)
    assert ENFORMER.output_span == 114_688 and ENFORMER.context == 40_960
    t = Tiling(ENFORMER, 1_000_003, ENFORMER.output_span)
    assert t.n_windows == 9 and t.n_bins == 7813
    assert t.input_interval(0) == (-40_960, 155_648)
    assert t.input_interval(1) == (114_688 - 40_960, 114_688 + 114_688 + 40_960)
    assert [t.owned_bins(k) for k in (0, 1, 8)] == [(0, 896), (896, 1792), (7168, 7813)]


@pytest.mark.parametrize("stride", [0, 64, 100, 129, ENFORMER.output_span + 128])
def test_bad_stride_is_refused(stride):
    with pytest.raises(ValueError, match="multiple of 128"):
        Tiling(ENFORMER, 10_000, stride)


def test_whole_genome_plan_names_are_deterministic():
    parts = plan_chromosome("chr1", 5_000_000, ENFORMER, ENFORMER.output_span, 16)
    assert [p.name for p in parts] == ["part-000000-000016.parquet", "part-000016-000032.parquet",
                                       "part-000032-000044.parquet"]
    assert sum(p.n_rows for p in parts) == n_bins(5_000_000, 128)
