"""Tiling and stitching: which model windows cover a chromosome, and which bins each window writes.

Owns the geometry of a model (input length, bin size, output bins) and the pure arithmetic of the
contract: window ``k`` of a chromosome has output ``[k*stride, k*stride + output_span)`` and input
``[k*stride - context, k*stride + output_span + context)``; windows run while ``k*stride < length``.
A bin predicted by several windows is written by the window whose output centre is nearest the bin's
centre (ties go to the lower ``k``), so every bin is written exactly once. No I/O, no Ray, no torch.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

BinRanges = tuple[tuple[int, int], ...]  # sorted, disjoint, half-open ranges of bin indices


@dataclass(frozen=True)
class Geometry:
    """Input/output geometry of a sequence-to-function model (Enformer's by default)."""

    input_length: int = 196_608
    bin_size: int = 128
    output_bins: int = 896

    def __post_init__(self) -> None:
        if self.input_length < self.output_span or (self.input_length - self.output_span) % 2:
            raise ValueError(
                f"input_length {self.input_length} must exceed output span {self.output_span} by an even number"
            )

    @property
    def output_span(self) -> int:
        return self.output_bins * self.bin_size

    @property
    def context(self) -> int:
        return (self.input_length - self.output_span) // 2

    def check_stride(self, stride: int) -> None:
        """Raise ValueError unless ``stride`` is a multiple of the bin size within [bin_size, output_span]."""
        if stride % self.bin_size or not self.bin_size <= stride <= self.output_span:
            raise ValueError(
                f"--stride {stride} must be a multiple of {self.bin_size} between {self.bin_size} "
                f"and {self.output_span} (the output span); the default is {self.output_span}"
            )


ENFORMER = Geometry()


def n_bins(length: int, bin_size: int) -> int:
    """Bins of a chromosome of ``length`` bp: ``ceil(length / bin_size)``, the last one possibly short."""
    return -(-length // bin_size)


@dataclass(frozen=True)
class Tiling:
    """The windows of one chromosome at a given stride."""

    geometry: Geometry
    length: int
    stride: int

    def __post_init__(self) -> None:
        self.geometry.check_stride(self.stride)
        if self.length <= 0:
            raise ValueError(f"chromosome length must be positive, got {self.length}")

    @property
    def n_windows(self) -> int:
        return -(-self.length // self.stride)

    @property
    def n_bins(self) -> int:
        return n_bins(self.length, self.geometry.bin_size)

    @property
    def stride_bins(self) -> int:
        return self.stride // self.geometry.bin_size

    def input_interval(self, k: int) -> tuple[int, int]:
        """Input interval of window ``k``; it may extend past ``[0, length)`` (that part is padding)."""
        start = k * self.stride - self.geometry.context
        return start, start + self.geometry.input_length

    def output_interval(self, k: int) -> tuple[int, int]:
        start = k * self.stride
        return start, start + self.geometry.output_span

    def _boundary(self, k: int) -> int:
        """First bin that window ``k`` no longer owns to the right (before clipping to the chromosome).

        Window k owns bin b iff b + 1/2 <= k*s + B/2 + s/2 (s = stride in bins, B = output bins):
        that midpoint between the centres of windows k and k+1 is where k+1 becomes nearer, and a bin
        centred exactly on it goes to the lower k. Solved in integers: b <= floor((2ks + B + s - 1) / 2).
        """
        s, big_b = self.stride_bins, self.geometry.output_bins
        return (2 * k * s + big_b + s - 1) // 2 + 1

    def owned_bins(self, k: int) -> tuple[int, int]:
        """Half-open range of bins that window ``k`` writes (most-central prediction rule)."""
        if not 0 <= k < self.n_windows:
            raise IndexError(f"window {k} out of range [0, {self.n_windows})")
        lo = 0 if k == 0 else self._boundary(k - 1)
        hi = self.n_bins if k == self.n_windows - 1 else self._boundary(k)
        return lo, min(hi, self.n_bins)

    def window_of_bin(self, b: int) -> int:
        """The window that writes bin ``b``."""
        s, big_b = self.stride_bins, self.geometry.output_bins
        # The smallest k whose right boundary (see _boundary) lies beyond b, clamped to real windows.
        k = -(-(2 * b + 1 - big_b - s) // (2 * s))
        return min(max(k, 0), self.n_windows - 1)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> BinRanges:
    """Sort and merge half-open integer ranges, dropping empty ones."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(r for r in ranges if r[1] > r[0]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def intersect_ranges(a: Sequence[tuple[int, int]], lo: int, hi: int) -> BinRanges:
    """Ranges of ``a`` clipped to ``[lo, hi)``."""
    return tuple((max(x, lo), min(y, hi)) for x, y in a if min(y, hi) > max(x, lo))


def bins_of_interval(start: int, end: int, bin_size: int) -> tuple[int, int]:
    """Bins overlapping the bp interval ``[start, end)``."""
    return start // bin_size, n_bins(end, bin_size)


@dataclass(frozen=True)
class WindowTask:
    """One window to predict, and the bins (global indices) it writes."""

    k: int
    first_bin: int  # global index of the window's first output bin
    input_start: int  # bp; the input may start before 0 or end past the chromosome (padding)
    emit: BinRanges

    @property
    def n_rows(self) -> int:
        return sum(hi - lo for lo, hi in self.emit)


@dataclass(frozen=True)
class PartPlan:
    """A group of consecutive windows of one chromosome, written as one Parquet part.

    The part's name depends only on ``(chrom, first_window, end_window)``: the full window range of
    the group, whether or not a region run needs every window in it. A plan is a few numbers, not its
    windows: at a small stride a part holds thousands of windows and a genome millions, so ``windows``
    is derived on demand where the part is read and stitched, and the driver never holds them all.
    """

    chrom: str
    length: int
    first_window: int
    end_window: int
    geometry: Geometry
    stride: int
    wanted: BinRanges  # the bins this part writes: what its windows own, within the run's selection

    @property
    def name(self) -> str:
        return f"part-{self.first_window:06d}-{self.end_window:06d}.parquet"

    @property
    def tiling(self) -> Tiling:
        return Tiling(self.geometry, self.length, self.stride)

    @property
    def windows(self) -> tuple[WindowTask, ...]:
        """The windows that write at least one wanted bin, in order, with the bins each writes."""
        tiling, wanted, tasks = self.tiling, self.wanted, []
        j = 0  # the first wanted range not wholly left of the current window's bins (both advance together)
        for first, end in self._window_runs():
            for k in range(first, end):
                lo, hi = tiling.owned_bins(k)
                while j < len(wanted) and wanted[j][1] <= lo:
                    j += 1
                emit, i = [], j
                while i < len(wanted) and wanted[i][0] < hi:
                    emit.append((max(wanted[i][0], lo), min(wanted[i][1], hi)))
                    i += 1
                if emit:
                    tasks.append(WindowTask(k, k * tiling.stride_bins, tiling.input_interval(k)[0], tuple(emit)))
        return tuple(tasks)

    def _window_runs(self) -> list[tuple[int, int]]:
        """Half-open ranges of the windows owning a wanted bin (a bin's owner is monotone in the bin)."""
        tiling = self.tiling
        runs: list[tuple[int, int]] = []
        for lo, hi in self.wanted:
            a, b = tiling.window_of_bin(lo), tiling.window_of_bin(hi - 1) + 1
            if runs and a <= runs[-1][1]:
                runs[-1] = (runs[-1][0], max(runs[-1][1], b))
            else:
                runs.append((a, b))
        return runs

    @property
    def n_rows(self) -> int:
        return sum(hi - lo for lo, hi in self.wanted)

    # The engine's view of a part (see engine.Part): the window range it names, and the windows it runs.
    @property
    def first(self) -> int:
        return self.first_window

    @property
    def end(self) -> int:
        return self.end_window

    @property
    def units(self) -> int:
        return sum(hi - lo for lo, hi in self._window_runs())


# What a part should hold, in rows (bins). At Enformer's full 5,313 float16 tracks a row is ~10.6 kB, so
# 14,336 rows make a ~150 MB part: in the 100 MB - 1 GB range Parquet readers (DuckDB, Arrow, Spark) read
# best, one row group (store.ROW_GROUP_ROWS), and the same 16 windows a part held before parts were sized by
# rows (so default-stride Enformer plans are unchanged). At stride 128 a window owns one bin, so a part then
# holds 14,336 windows, not 16 rows.
DEFAULT_ROWS_PER_PART = 16 * 896
# A part is one device call: fewer windows than a batch would leave the accelerator half-fed (Borzoi at its
# default stride owns 6,144 bins per window, so the row target alone would give 2-window parts).
MIN_WINDOWS_PER_PART = 4


def windows_per_part_for_rows(rows: int, geometry: Geometry, stride: int) -> int:
    """Windows per part so that a part holds about ``rows`` rows: each window owns ``stride / bin_size`` bins."""
    if rows < 1:
        raise ValueError(f"rows per part must be at least 1, got {rows}")
    geometry.check_stride(stride)
    return max(MIN_WINDOWS_PER_PART, rows // (stride // geometry.bin_size))


def plan_chromosome(
    chrom: str,
    length: int,
    geometry: Geometry,
    stride: int,
    windows_per_part: int,
    bins: BinRanges | None = None,
) -> list[PartPlan]:
    """Parts for one chromosome: all of its bins, or only ``bins`` (sorted disjoint bin ranges).

    Costs O(parts + ranges), not O(windows): a part is planned from the bins its window range owns.
    """
    if windows_per_part < 1:
        raise ValueError("windows_per_part must be >= 1")
    tiling = Tiling(geometry, length, stride)
    wanted = ((0, tiling.n_bins),) if bins is None else intersect_ranges(bins, 0, tiling.n_bins)
    parts: list[PartPlan] = []
    for first in range(0, tiling.n_windows, windows_per_part):
        end = min(first + windows_per_part, tiling.n_windows)
        # The bins windows [first, end) own: from the first's left edge to the last's right edge (owned
        # ranges are consecutive); windows at a chromosome's end may own none.
        lo = min(tiling.owned_bins(first)[0], tiling.n_bins) if first else 0
        hi = tiling.n_bins if end == tiling.n_windows else min(tiling.owned_bins(end)[0], tiling.n_bins)
        if hi <= lo:
            continue
        i = max(bisect.bisect_right(wanted, (lo, tiling.n_bins + 1)) - 1, 0)  # last range starting <= lo
        mine = []
        while i < len(wanted) and wanted[i][0] < hi:
            if wanted[i][1] > lo:
                mine.append((max(wanted[i][0], lo), min(wanted[i][1], hi)))
            i += 1
        if mine:
            parts.append(PartPlan(chrom, length, first, end, geometry, stride, tuple(mine)))
    return parts


def plan_selection(
    selection: Mapping[str, BinRanges | None],
    lengths: Mapping[str, int],
    geometry: Geometry,
    stride: int,
    windows_per_part: int,
) -> list[PartPlan]:
    """Parts for every selected chromosome (``None`` = all its bins), in selection order."""
    return [
        part
        for chrom, bins in selection.items()
        for part in plan_chromosome(chrom, lengths[chrom], geometry, stride, windows_per_part, bins)
    ]

