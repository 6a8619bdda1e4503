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

__all__ = [
    "export_attribution_bigwig", "export_bigwig", "export_modisco", "plot_attribution", "plot_edit", "plot_mutagenesis",
    "plot_region", "read_attributions", "read_committed",
]

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

    from .store import OutputStore, chrom_of_dir, records_from_manifest

    store = OutputStore(url, storage_options)
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


# --- attributions (the ``attribute`` kind's tables) ------------------------------------------------------------

HYP_COLUMNS = ("hyp_a", "hyp_c", "hyp_g", "hyp_t")
LOGO_COLOURS = {"A": "#109648", "C": "#255C99", "G": "#F7B32B", "T": "#D62839", "N": "0.6"}
LOGO_MAX_LETTERS = 2_000  # past this many positions letters are unreadable: coloured bars instead


def _attribution_manifest(url: str, storage_options: Mapping[str, str] | None) -> dict:
    from .store import OutputStore

    manifest = OutputStore(url, storage_options).read_manifest()
    if manifest is None:
        raise ValueError(f"no _manifest.json at {url}: not an enformer-batch output, or the run never started")
    identity = manifest.get("identity") or {}
    if identity.get("mode") != "attribution":
        raise ValueError(f"{url} is not an attribution output (its run is {identity.get('mode', 'an atlas')!r})")
    return manifest


def _region_order(identity: Mapping) -> list[str]:
    """Region labels in the order the run was given them (first occurrence of a repeated region)."""
    labels = [f"{c}:{s}-{e}" for c, s, e in identity.get("regions", [])]
    return list(dict.fromkeys(labels))


def read_attributions(url: str, storage_options: Mapping[str, str] | None = None, region: str | None = None,
                      ) -> tuple[dict, dict[str, pa.Table]]:
    """An attribution output's manifest and its rows by region label (region order, each sorted by ``pos``);
    with ``region``, that region's rows only (read from its chromosome's parts). Every region must be complete:
    a run still going or an unfinished region is an error naming it."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .store import OutputStore, chrom_of_dir, records_from_manifest

    manifest = _attribution_manifest(url, storage_options)
    order = _region_order(manifest["identity"])
    if region is not None:
        region = region.replace(",", "")
        if region not in order:
            raise ValueError(f"no region {region!r} in {url}; it has {', '.join(order[:5])}"
                             + (f" and {len(order) - 5} more" if len(order) > 5 else ""))
        order = [region]
    chroms = {label.rsplit(":", 1)[0] for label in order}
    store = OutputStore(url, storage_options)
    columns = ["region", "pos", "ref", "attr", *HYP_COLUMNS]
    tables = []
    for path in sorted(records_from_manifest(manifest)):
        if chrom_of_dir(path.split("/")[0]) not in chroms:
            continue
        with store.fs.open(store.path(path), "rb") as f:
            table = pq.read_table(f, columns=columns)
        if region is not None:
            table = table.filter(pc.equal(table.column("region"), region))
        tables.append(table)
    rows = pa.concat_tables(tables) if tables else None
    by_region: dict[str, pa.Table] = {}
    for label in order:
        chrom, span = label.rsplit(":", 1)
        start, end = (int(v) for v in span.split("-"))
        got = rows.filter(pc.equal(rows.column("region"), label)) if rows is not None else None
        if got is None or got.num_rows != end - start:
            found = 0 if got is None else got.num_rows
            raise ValueError(f"region {label} has {found} of its {end - start} positions in {url}: the run has not "
                             "finished it (re-run the same command to resume)")
        by_region[label] = got.sort_by("pos")
    return manifest, by_region


def export_modisco(url: str, out_dir: str, storage_options: Mapping[str, str] | None = None,
                   ) -> tuple[str, str]:
    """``<out_dir>/ohe.npz`` and ``<out_dir>/shap.npz`` for ``modisco motifs -s ohe.npz -a shap.npz``: arrays
    ``(regions, 4, length)`` float32 under TF-MoDISco-lite's key ``arr_0``, regions in the run's order, channels
    A, C, G, T. ``ohe`` is the one-hot reference (N: all zero), ``shap`` the hypothetical contributions. Regions
    must all have one length. TF-MoDISco's ``-w`` (window, default 400) must not exceed that length."""
    _, by_region = read_attributions(url, storage_options)
    lengths = {label: t.num_rows for label, t in by_region.items()}
    if len(set(lengths.values())) > 1:
        (a, la), (b, lb) = next(((x, lengths[x]), (y, lengths[y])) for x in lengths for y in lengths
                                if lengths[x] != lengths[y])
        raise ValueError(f"TF-MoDISco needs regions of one length; {a} is {la:,} bp and {b} is {lb:,} bp "
                         f"({len(set(lengths.values()))} lengths among {len(lengths)} regions)")
    n, length = len(by_region), next(iter(lengths.values()))
    ohe = np.zeros((n, 4, length), np.float32)
    shap = np.zeros((n, 4, length), np.float32)
    for k, table in enumerate(by_region.values()):
        ref = np.array(table.column("ref").to_pylist())
        for c, base in enumerate("ACGT"):
            ohe[k, c] = ref == base
            shap[k, c] = table.column(HYP_COLUMNS[c]).to_numpy()
    os.makedirs(out_dir, exist_ok=True)
    paths = os.path.join(out_dir, "ohe.npz"), os.path.join(out_dir, "shap.npz")
    np.savez_compressed(paths[0], ohe)  # positional: TF-MoDISco-lite reads the key arr_0
    np.savez_compressed(paths[1], shap)
    return paths


def export_attribution_bigwig(url: str, out_dir: str, storage_options: Mapping[str, str] | None = None) -> str:
    """``<out_dir>/attr.bw``: ``attr`` per base over every region, the FASTA's chromosomes in the header.

    A bigWig holds one value per base: overlapping regions (each computed in its own window, so with other values
    at the shared bases) are an error naming two of them."""
    pybigwig = _import_pybigwig()
    manifest, by_region = read_attributions(url, storage_options)
    header = list(manifest["identity"]["fasta"]["chromosomes"].items())
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for label in by_region:
        chrom, span = label.rsplit(":", 1)
        start, end = (int(v) for v in span.split("-"))
        spans.setdefault(chrom, []).append((start, end, label))
    for items in spans.values():
        items.sort()
        for (_, e1, a), (s2, _, b) in zip(items, items[1:]):
            if s2 < e1:
                raise ValueError(f"regions {a} and {b} overlap: a bigWig holds one attribution per base; export "
                                 "runs of non-overlapping regions")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "attr.bw")
    bw = pybigwig.open(path, "w")
    if bw is None:
        raise OSError(f"cannot create bigWig {path}")
    try:
        bw.addHeader(header, maxZooms=10)
        for chrom, _ in header:  # header order, positions ascending: what pyBigWig requires
            for start, _, label in spans.get(chrom, []):
                table = by_region[label]
                values = table.column("attr").cast(pa.float64()).to_numpy()
                bw.addEntries(chrom, start, values=values.tolist(), span=1, step=1)
    finally:
        bw.close()
    return path


def describe_target(identity: Mapping, chrom: str | None = None) -> str:
    """The target of an attribution run in words, e.g. ``ln(1 + Σ region bins mean(tracks DNASE:x, …))``; for a
    gene target the gene on ``chrom`` (its name, gene_id and strand) and only the tracks its target averages (its
    strand's and the unstranded ones)."""
    tracks = identity.get("tracks", [])
    names = [t.get("name", "?") for t in tracks]
    target = identity.get("target", "center")
    bins = {"center": "the centre bin", "region": "the region's bins"}.get(target, target)
    if target.startswith("gene:"):
        genes = identity.get("genes") or {}
        gene = next((g for g in genes.get("target", []) if g.get("chrom") == chrom), None)
        if gene is None:
            bins = f"the exon bins of {target[5:]}"
        else:
            bins = f"the exon bins of {gene['gene_name']} ({gene['gene_id']}, {gene['strand']} strand)"
            strands = genes.get("track_strands") or [""] * len(names)
            names = [n for n, s in zip(names, strands) if s in ("", gene["strand"])]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    inner = f"Σ over {bins} of the mean of {shown}"
    return f"ln(1 + {inner})" if identity.get("log") else inner


def plot_attribution(url: str, region: str, out: str, *, width_px: int = 1400, height_px: int = 360, dpi: int = 100,
                     storage_options: Mapping[str, str] | None = None) -> tuple[int, int]:
    """A sequence logo of ``attr`` over one region: each position's reference base drawn as a letter whose height is
    its contribution (above the axis when it raises the target, below, mirrored, when it lowers it); past
    ``LOGO_MAX_LETTERS`` positions, bars in the base's colour. The title names the target. Returns (width, height)."""
    plt = _import_pyplot()
    from matplotlib.collections import PatchCollection
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import PathPatch
    from matplotlib.textpath import TextPath
    from matplotlib.ticker import FuncFormatter
    from matplotlib.transforms import Affine2D

    manifest, by_region = read_attributions(url, storage_options, region=region)
    label, table = next(iter(by_region.items()))
    pos = table.column("pos").to_numpy() - 1  # 0-based genome position
    refs = table.column("ref").to_pylist()
    attr = table.column("attr").cast(pa.float64()).to_numpy()
    fig, ax = plt.subplots(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    if len(pos) <= LOGO_MAX_LETTERS:
        font = FontProperties(family="DejaVu Sans", weight="bold")
        glyphs = {}
        for base in "ACGTN":
            path = TextPath((0, 0), base, size=1, prop=font)
            box = path.get_extents()
            # Each letter fills a unit box: 0.9 of a position wide, height 1, from y = 0.
            glyphs[base] = path.transformed(Affine2D().translate(-box.x0, -box.y0)
                                            .scale(0.9 / box.width, 1 / box.height))
        patches, colours = [], []
        for x, base, value in zip(pos, refs, attr):
            if value == 0:
                continue  # N, or no contribution: nothing to draw
            base = base if base in glyphs else "N"
            path = glyphs[base].transformed(Affine2D().scale(1, value).translate(x - 0.45, 0))
            patches.append(PathPatch(path))
            colours.append(LOGO_COLOURS[base])
        ax.add_collection(PatchCollection(patches, facecolors=colours, edgecolors="none"))
    else:
        colours = [LOGO_COLOURS.get(b, LOGO_COLOURS["N"]) for b in refs]
        ax.bar(pos, attr, width=1.0, color=colours, linewidth=0)
    n = np.append(np.array(refs) == "N", False)
    for lo, hi in zip(np.flatnonzero(n & ~np.append(False, n[:-1])), np.flatnonzero(~n & np.append(False, n[:-1]))):
        ax.axvspan(pos[lo] - 0.5, pos[hi - 1] + 0.5, color="0.92", linewidth=0)  # N: no base, no contribution
    limit = float(np.abs(attr).max()) or 1.0
    ax.set_xlim(pos[0] - 0.5, pos[-1] + 0.5)
    ax.set_ylim(min(0.0, float(attr.min())) - 0.05 * limit, max(0.0, float(attr.max())) + 0.05 * limit)
    ax.axhline(0, color="0.5", linewidth=0.5)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v):,}"))
    ax.set_xlabel(f"{label.rsplit(':', 1)[0]} position (bp, 0-based); letters: the reference base; grey: N",
                  fontsize=8)
    ax.set_ylabel("input × gradient", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    identity = manifest["identity"]
    model = identity.get("model", {})
    model_name = model.get("id") if isinstance(model, Mapping) else model
    fig.suptitle(f"attribution of {describe_target(identity, label.rsplit(':', 1)[0])} — {label}", fontsize=9)
    ax.set_title(f"model {model_name}" if model_name else "", fontsize=7, color="0.35")
    fig.subplots_adjust(left=0.07, right=0.99, top=0.85, bottom=0.16)
    fig.savefig(out, dpi=dpi, format="png")
    plt.close(fig)
    return width_px, height_px
