"""Getting an atlas out to other tools: bigWig files for genome browsers and PNG plots of a region.

Owns the conversions that need optional libraries (the ``atlas`` extra: pyBigWig, matplotlib); both are
imported lazily so the engine itself never depends on them. Everything is read through
``enformer_batch.atlas``, so the same range and track checks apply. A bigWig gets one interval per stored
bin, with the bin's real end (the last bin of a chromosome may be short); bins with null values (skipped
all-N windows) and bins a region run never wrote are left out, which browsers draw as gaps.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from .atlas import Atlas, TrackSpec, open_atlas

__all__ = ["export_bigwig", "plot_edit", "plot_mutagenesis", "plot_region", "read_committed"]

_EXTRA_HINT = "pip install 'enformer-batch[atlas]'"


def _import_pybigwig():
    try:
        import pyBigWig
    except ImportError:
        raise ImportError(f"bigWig export needs pyBigWig: {_EXTRA_HINT}") from None
    return pyBigWig


def _import_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"plotting needs matplotlib: {_EXTRA_HINT}") from None
    matplotlib.use("Agg", force=True)  # files only; never try to open a display
    import matplotlib.pyplot as plt

    return plt


def _as_atlas(atlas: Atlas | str, storage_options: Mapping[str, str] | None, allow_incomplete: bool) -> Atlas:
    if isinstance(atlas, Atlas):
        return atlas
    return open_atlas(atlas, storage_options, allow_incomplete=allow_incomplete)


def bigwig_filename(track: str) -> str:
    """A file name for a track's bigWig; characters unsafe in file names become '_'."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", track) + ".bw"


def export_bigwig(
    atlas: Atlas | str,
    out_dir: str,
    tracks: TrackSpec = None,
    *,
    storage_options: Mapping[str, str] | None = None,
    allow_incomplete: bool = False,
) -> list[str]:
    """Write ``<out_dir>/<track>.bw`` for each selected track (a local directory); returns the paths.

    The header lists every chromosome of the atlas' FASTA with its length, so the files line up with the
    genome in a browser even where the run covered only some chromosomes.
    """
    pybigwig = _import_pybigwig()
    atlas = _as_atlas(atlas, storage_options, allow_incomplete)
    names = atlas.select_tracks(tracks)
    files = {name: bigwig_filename(name) for name in names}
    if len(set(files.values())) != len(files):
        raise ValueError("two selected tracks map to the same bigWig file name; select them separately")
    os.makedirs(out_dir, exist_ok=True)
    header = list(atlas.genome_chroms.items())
    written = []
    for name in names:
        path = os.path.join(out_dir, files[name])
        bw = pybigwig.open(path, "w")
        if bw is None:
            raise OSError(f"cannot create bigWig {path}")
        try:
            bw.addHeader(header, maxZooms=10)
            # pyBigWig wants chromosomes in header order and intervals sorted within each.
            for chrom, _ in header:
                if chrom not in atlas.chroms:
                    continue
                for part in atlas.parts(chrom):
                    # One part at a time keeps memory at a part's worth of one column, whatever the genome.
                    table = _read_part_column(atlas, part.path, name)
                    _add_intervals(bw, chrom, table, name)
        finally:
            bw.close()
        written.append(path)
    return written


def _read_part_column(atlas: Atlas, relative: str, name: str) -> pa.Table:
    import pyarrow.parquet as pq

    with atlas.store.fs.open(atlas.store.path(relative), "rb") as f:
        return pq.read_table(f, columns=["start", "end", name]).sort_by("start")


def _add_intervals(bw, chrom: str, table: pa.Table, name: str) -> None:
    values = table.column(name)
    keep = values.is_valid().to_numpy(zero_copy_only=False)
    if not keep.any():
        return
    starts = table.column("start").to_numpy()[keep]
    ends = table.column("end").to_numpy()[keep]
    vals = values.cast(pa.float64()).to_numpy(zero_copy_only=False)[keep]
    bw.addEntries([chrom] * len(starts), starts.tolist(), ends=ends.tolist(), values=vals.tolist())


def plot_region(
    atlas: Atlas | str,
    chrom: str,
    start: int,
    end: int,
    tracks: TrackSpec,
    out: str,
    *,
    width_px: int = 1200,
    row_height_px: int = 120,
    dpi: int = 100,
    storage_options: Mapping[str, str] | None = None,
    allow_incomplete: bool = False,
) -> tuple[int, int]:
    """Draw the selected tracks over ``chrom:[start, end)`` into a PNG at ``out``; returns (width, height) px.

    One row per track, labelled with its identifier, x axis in bp; bins without a value are drawn as gaps.
    """
    plt = _import_pyplot()
    from matplotlib.ticker import FuncFormatter

    atlas = _as_atlas(atlas, storage_options, allow_incomplete)
    table = atlas.query(chrom, start, end, tracks=tracks)
    names = table.column_names[3:]
    descriptions = {t.name: t.description for t in atlas.track_list}
    height_px = row_height_px * len(names) + 90  # title and the shared x axis
    fig, axes = plt.subplots(
        len(names), 1, sharex=True, squeeze=False, figsize=(width_px / dpi, height_px / dpi), dpi=dpi
    )
    starts = table.column("start").to_numpy()
    ends = table.column("end").to_numpy()
    for ax, name in zip(axes[:, 0], names, strict=True):
        values = table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
        for lo, hi in _drawable_runs(starts, ends, values):
            edges = np.append(starts[lo:hi], ends[hi - 1])
            ax.stairs(values[lo:hi], edges, fill=True, baseline=0, color="tab:blue", alpha=0.85, linewidth=0)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        label = descriptions.get(name, "")
        if label:
            ax.text(0.005, 0.92, label, transform=ax.transAxes, fontsize=7, va="top", color="0.3")
        ax.tick_params(labelsize=7)
        ax.margins(x=0)
        ax.spines[["top", "right"]].set_visible(False)
    last = axes[-1, 0]
    last.set_xlim(start, end)
    last.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v):,}"))
    last.set_xlabel(f"{chrom} position (bp, 0-based)", fontsize=8)
    fig.suptitle(f"{chrom}:{start:,}-{end:,}", fontsize=9)
    fig.subplots_adjust(left=0.14, right=0.97, top=1 - 30 / height_px, bottom=60 / height_px, hspace=0.25)
    fig.savefig(out, dpi=dpi, format="png")
    plt.close(fig)
    return width_px, height_px


def _drawable_runs(starts: np.ndarray, ends: np.ndarray, values: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges ``[lo, hi)`` of contiguous bins that all have values; what lies between is a gap."""
    valid = ~np.isnan(values)
    # A run breaks at a missing value and where a bin does not start at the previous bin's end.
    joined = np.append(False, (starts[1:] == ends[:-1]) & valid[1:] & valid[:-1])
    first = np.flatnonzero(valid & ~joined)
    last = np.flatnonzero(valid & ~np.append(joined[1:], False))
    return [(int(lo), int(hi) + 1) for lo, hi in zip(first, last, strict=True)]


def read_committed(url: str, columns: list[str] | None = None, storage_options: Mapping[str, str] | None = None,
                   ) -> pa.Table:
    """Every committed part of an output (atlas or scored table) as one table, with its ``chrom`` column."""
    import pyarrow.parquet as pq

    from .store import AtlasStore, chrom_of_dir, records_from_manifest

    store = AtlasStore(url, storage_options)
    manifest = store.read_manifest()
    if manifest is None:
        raise ValueError(f"no _manifest.json at {url}: not an enformer-batch output, or the run never started")
    tables = []
    for path in sorted(records_from_manifest(manifest)):
        with store.fs.open(store.path(path), "rb") as f:
            table = pq.read_table(f, columns=columns)
        chrom = chrom_of_dir(path.split("/")[0])
        tables.append(table.append_column("chrom", pa.array([chrom] * table.num_rows, pa.string())))
    if not tables:
        raise ValueError(f"{url} has no committed parts yet")
    return pa.concat_tables(tables)


def plot_mutagenesis(
    url: str, region: str, track: str, out: str, *, score: str = "sad", width_px: int = 1200, dpi: int = 100,
    storage_options: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """Heat map of one score and track over a mutagenesis region: positions × the four bases, reference
    sequence along the x axis, mean |score| per position above it. Returns (width, height) in pixels."""
    import pyarrow.compute as pc

    plt = _import_pyplot()
    column = f"{score}:{track}"
    try:
        table = read_committed(url, ["region", "pos", "ref", "alt", column], storage_options)
    except (KeyError, pa.ArrowInvalid) as e:
        raise ValueError(f"{url} has no column {column!r} (score {score!r}, track {track!r}): {e}") from None
    rows = table.filter(pc.equal(table.column("region"), region))
    if rows.num_rows == 0:
        regions = sorted(set(table.column("region").to_pylist()))
        raise ValueError(f"no rows for region {region!r}; the table has {', '.join(regions[:5])}")
    pos = rows.column("pos").to_numpy()
    first, last = int(pos.min()), int(pos.max())
    grid = np.full((4, last - first + 1), np.nan)
    ref = ["?"] * (last - first + 1)
    values = rows.column(column).cast(pa.float64()).to_numpy(zero_copy_only=False)
    for p, r, a, v in zip(pos, rows.column("ref").to_pylist(), rows.column("alt").to_pylist(), values):
        grid["ACGT".index(a), p - first] = v
        ref[p - first] = r
    height_px = 420
    fig, (top, heat) = plt.subplots(2, 1, sharex=True, figsize=(width_px / dpi, height_px / dpi), dpi=dpi,
                                    gridspec_kw={"height_ratios": [1, 2]})
    x = np.arange(first, last + 1)
    top.bar(x, np.nanmean(np.abs(grid), axis=0), width=1.0, color="0.35")
    top.set_ylabel(f"mean |{score}|", fontsize=8)
    top.spines[["top", "right"]].set_visible(False)
    limit = float(np.nanmax(np.abs(grid))) or 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.75")  # grey: the reference base itself, no mutant
    image = heat.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, vmin=-limit, vmax=limit,
                        interpolation="nearest", extent=(first - 0.5, last + 0.5, 3.5, -0.5))
    heat.set_yticks(range(4), list("ACGT"), fontsize=8)
    if len(x) <= 120:  # the reference bases themselves fit under the columns
        heat.set_xticks(x, ref, fontsize=6, family="monospace")
    heat.set_xlabel(f"position (1-based) {first:,}-{last:,}, reference base below when it fits; grey: the "
                    "reference itself", fontsize=8)
    fig.colorbar(image, ax=[top, heat], shrink=0.6, label=f"{score}:{track}")
    fig.suptitle(f"saturation mutagenesis {region}", fontsize=9)
    fig.savefig(out, dpi=dpi, format="png")
    plt.close(fig)
    return width_px, height_px


def plot_edit(edit, ref: np.ndarray, alt: np.ndarray, first_bp: int, bin_size: int, track_names, out: str, *,
              width_px: int = 1200, row_height_px: int = 150, dpi: int = 100) -> tuple[int, int]:
    """Reference vs alternate predictions of one edit, one row per track (``ref``/``alt``: ``[bins, tracks]``)."""
    plt = _import_pyplot()

    height_px = row_height_px * len(track_names) + 90
    fig, axes = plt.subplots(len(track_names), 1, sharex=True, squeeze=False,
                             figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    x = first_bp + np.arange(ref.shape[0]) * bin_size
    for j, (ax, name) in enumerate(zip(axes[:, 0], track_names, strict=True)):
        ax.plot(x, ref[:, j], color="0.3", linewidth=0.8, label="reference")
        ax.plot(x, alt[:, j], color="tab:red", linewidth=0.8, alpha=0.8, label="edited")
        ax.axvspan(edit.start, max(edit.end, edit.start + 1), color="tab:orange", alpha=0.3)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper right", frameon=False)
    axes[-1, 0].set_xlabel(f"{edit.chrom} position of the reference bins (bp, 0-based); the edited input's bins "
                           "are not re-aligned", fontsize=8)
    what = "deletion" if not edit.sequence else "insertion" if edit.start == edit.end else "replacement"
    fig.suptitle(f"edit {edit.name}: {what} of {edit.chrom}:{edit.start:,}-{edit.end:,} "
                 f"({len(edit.sequence)} bp in)", fontsize=9)
    fig.subplots_adjust(left=0.14, right=0.97, top=1 - 30 / height_px, bottom=60 / height_px, hspace=0.3)
    fig.savefig(out, dpi=dpi, format="png")
    plt.close(fig)
    return width_px, height_px
