"""Dry-run estimates: what a prediction run would compute, write and cost, without running it.

Owns the estimate behind ``enformer-batch plan`` (the command keeps its name; "plan" in the code means part
plans, ``windows.plan_chromosome``): windows, bins and parts come from the same code a run
uses (``kinds.atlas.select_bins`` and ``windows.plan_chromosome`` over the FASTA index), so they are exact;
output bytes, GPU-hours and cost are estimates from a few measured or published figures kept here, each
labelled with where it comes from and each overridable. No model weights are loaded: the track count
comes from the checkpoint's ``config.json`` (and its ``targets_<head>.txt`` for named track selections).

Gene and variant runs (``plan_genes``, ``plan_variants``) count windows as those runs do: one per gene of the
annotation, streamed once by ``annotation.read_annotation`` (after ``--gene-types``, on the FASTA's
chromosomes); per part of a VCF, one reference per distinct position and one alternate per allele, the VCF
streamed once. ``--genes`` with a VCF adds no window (gene sums are reduced on the device); its extra rows
are not counted, and the plan says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .families import DATA_DIR, FAMILIES, demo_checkpoint, family_of
from .units import human_bytes
from .windows import Geometry, plan_chromosome

# The default windows/s per GPU below are for full-size Enformer: its FLOPs per window and its measured share
# of the bf16 peak (families.EnformerFamily: 0.30 on an H200, compiled; end to end a 16-core node wrote 0.67
# of the device's rate, Parquet encoding: pass --windows-per-second for that).
_ENFORMER = FAMILIES["enformer"]


@dataclass(frozen=True)
class GpuProfile:
    """Published figures for one GPU type, and the throughput estimate derived from them."""

    name: str
    peak_bf16_tflops: float  # dense (no sparsity) tensor-core peak from the vendor's datasheet
    price_per_gpu_hour: float  # USD, on-demand list price per GPU of the named instance (see `instance`)
    instance: str

    @property
    def windows_per_second(self) -> float:
        """ESTIMATE: peak × Enformer's utilisation / its FLOPs per window (bf16 autocast, full Enformer)."""
        return self.windows_per_second_at(_ENFORMER.tflop_per_window, _ENFORMER.utilisation)

    def windows_per_second_at(self, tflop_per_window: float, utilisation: float = _ENFORMER.utilisation) -> float:
        """ESTIMATE for a model of ``tflop_per_window`` (e.g. Borzoi's 4.91) at ``utilisation`` of the peak."""
        return self.peak_bf16_tflops * utilisation / tflop_per_window


# Peaks: NVIDIA datasheets (dense bf16 tensor TFLOP/s). Prices: AWS us-east-1 / GCP us-central1 on-demand
# list prices per GPU (instance price / GPUs per instance) as published in 2024-2025; spot/preemptible is
# typically 60-70 % cheaper. All of them are ESTIMATES to be overridden with --windows-per-second and
# --price-per-hour once measured/quoted for your account.
GPU_PROFILES: dict[str, GpuProfile] = {
    p.name: p
    for p in (
        GpuProfile("T4", 65.0, 0.53, "AWS g4dn.xlarge (fp16 peak; T4 has no bf16)"),
        GpuProfile("A10G", 70.0, 1.01, "AWS g5.xlarge"),
        GpuProfile("L4", 121.0, 0.80, "AWS g6.xlarge"),
        GpuProfile("A100", 312.0, 4.10, "AWS p4d.24xlarge / 8"),
        GpuProfile("A100-GCP", 312.0, 3.67, "GCP a2-highgpu-1g"),
        GpuProfile("H100", 989.0, 6.88, "AWS p5.48xlarge / 8"),
        GpuProfile("H100-GCP", 989.0, 11.06, "GCP a3-highgpu-8g / 8"),
    )
}

# Parquet bytes per stored value relative to its raw width, measured with store.serialise_table's settings
# (zstd, no dictionary, byte-stream-split on float32) on smooth positive synthetic tracks (lognormal,
# 8-bin runs) at 12-5,313 tracks and 896-14,336 rows per part: 0.90-1.16 for float16, 0.81-0.94 for
# float32. Real predictions compress about as well; all-null (skipped) windows compress to almost nothing,
# so the estimate is an upper bound for genomes with long N runs.
VALUE_BYTES_RATIO = {"float16": 1.0, "float32": 0.86}
VALUE_BYTES = {"float16": 2, "float32": 4}
ROW_OVERHEAD_BYTES = 4  # start/end int64 columns after zstd (consecutive multiples of the bin size)
FOOTER_BYTES_PER_COLUMN = 160  # Parquet footer per column per file (~0.8 MiB at 5,313 columns)



@dataclass(frozen=True)
class ChromPlan:
    chrom: str
    length: int
    windows: int
    bins: int
    parts: int


@dataclass(frozen=True)
class RunPlan:
    """What a run would do, and the estimated bytes and GPU time; ``str()`` renders it as a table."""

    fasta: str
    geometry: Geometry
    stride: int
    tracks: int
    dtype: str
    passes_per_window: int  # forward passes per window (reverse complement × shifts)
    gpu: str
    windows_per_second: float
    price_per_hour: float
    throughput_source: str
    chroms: tuple[ChromPlan, ...] = field(default=())
    model: str = ""  # what the track count and geometry came from, in words
    family: str = "enformer"
    replicates: int = 1  # forward passes per window multiply by the ensemble's size

    @property
    def windows(self) -> int:
        return sum(c.windows for c in self.chroms)

    @property
    def bins(self) -> int:
        return sum(c.bins for c in self.chroms)

    @property
    def parts(self) -> int:
        return sum(c.parts for c in self.chroms)

    @property
    def output_bytes(self) -> int:
        return estimate_bytes(self.bins, self.parts, self.tracks, self.dtype)

    @property
    def gpu_hours(self) -> float:
        return self.windows * self.passes_per_window / self.windows_per_second / 3600

    @property
    def cost(self) -> float:
        return self.gpu_hours * self.price_per_hour

    def __str__(self) -> str:
        rows = [("chrom", "length", "windows", "bins", "parts")]
        rows += [(c.chrom, f"{c.length:,}", f"{c.windows:,}", f"{c.bins:,}", f"{c.parts:,}")
                 for c in self.chroms]
        total = sum(c.length for c in self.chroms)
        rows.append(("total", f"{total:,}", f"{self.windows:,}", f"{self.bins:,}", f"{self.parts:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        shown = rows if len(rows) <= 42 else rows[:21] + [("...",) + ("",) * 4] + rows[-20:]
        lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                 for r in shown]
        lines += [
            "",
            f"FASTA            {self.fasta}",
            f"model            {self.model or self.family}" + (f", ensemble of {self.replicates} replicates"
                                                               if self.replicates > 1 else ""),
            f"geometry         {self.geometry.input_length:,} bp in, {self.geometry.output_bins} bins of "
            f"{self.geometry.bin_size} bp out; stride {self.stride:,} bp",
            f"tracks           {self.tracks:,} × {self.dtype}",
            f"output (est.)    {human_bytes(self.output_bytes)} of Parquet "
            f"({self.bins:,} rows; upper bound where windows are all N)",
            f"forward passes   {self.windows * self.passes_per_window:,} "
            f"({self.passes_per_window} per window: reverse complement × shifts × replicates)",
            f"GPU              {self.gpu}: {self.windows_per_second:.1f} windows/s per GPU",
            *(f"                 {line}" for line in self.throughput_source.split("; ")),
            f"GPU time (est.)  {self.gpu_hours:,.2f} GPU-hours ({self.gpu_hours * 60:,.1f} GPU-minutes)",
            f"cost (est.)      ${self.cost:,.2f} at ${self.price_per_hour:.2f}/GPU-hour",
        ]
        return "\n".join(lines)


def estimate_bytes(rows: int, parts: int, tracks: int, dtype: str) -> int:
    """Parquet bytes of ``rows`` rows × ``tracks`` track columns of ``dtype`` in ``parts`` files."""
    values = rows * tracks * VALUE_BYTES[dtype] * VALUE_BYTES_RATIO[dtype]
    return int(values + rows * ROW_OVERHEAD_BYTES + parts * (tracks + 2) * FOOTER_BYTES_PER_COLUMN)


def read_lengths(fasta: str, storage_options: Mapping[str, str] | None = None) -> dict[str, int]:
    """Chromosome lengths from a FASTA's index, or directly from a ``.fai`` / ``chrom.sizes`` file."""
    if fasta.endswith((".fai", ".sizes", ".chrom.sizes")):
        import fsspec

        lengths: dict[str, int] = {}
        with fsspec.open(fasta, "rt", **dict(storage_options or {})) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and not line.startswith("#"):
                    lengths[fields[0]] = int(fields[1])
        if not lengths:
            raise ValueError(f"{fasta} lists no sequences")
        return lengths
    from .genome import FastaSource

    return FastaSource(fasta, dict(storage_options or {})).lengths()


@dataclass(frozen=True)
class ModelSummary:
    """What a dry run needs to know about ``--model``: read from config.json only (no weights, no torch)."""

    family: str
    geometry: Geometry
    heads: dict[str, int]
    replicates: int
    root: str | None  # checkpoint directory/URL of the first replicate (None for the official names)


def _read_config(model: str, storage_options: Mapping[str, str] | None) -> tuple[str, dict]:
    import fsspec

    demo = demo_checkpoint(model)
    root = str(demo) if demo is not None else model.rstrip("/")
    options = dict(storage_options or {}) if "://" in root else {}
    try:
        with fsspec.open(f"{root}/config.json", "rt", **options) as f:
            return root, json.load(f)
    except FileNotFoundError:
        raise ValueError(f"--model {model}: no config.json there") from None


def describe_model(model: str, storage_options: Mapping[str, str] | None = None) -> ModelSummary:
    """Family, geometry and heads of ``--model``: a family's name (``enformer`` / ``borzoi``: the published
    checkpoints' heads, nothing read), ``demo``, ``demo-borzoi``, a directory or URL, or a comma-separated
    replicate list."""
    sources = [m.strip() for m in model.split(",") if m.strip()] or [model]
    first = sources[0]
    if first in FAMILIES:
        fam = FAMILIES[first]
        return ModelSummary(first, fam.geometry({}), dict(fam.official_heads), len(sources), None)
    root, config = _read_config(first, storage_options)
    fam = family_of(config, first)
    return ModelSummary(fam.name, fam.geometry(config), fam.heads(config), len(sources), root)


def model_tracks(
    model: str, head: str, tracks: str | None, storage_options: Mapping[str, str] | None = None
) -> tuple[Geometry, int]:
    """Geometry and selected track count from a checkpoint's config.json (no weights are read).

    ``model`` is a family's name (the official checkpoints' heads, nothing read), ``demo``,
    ``demo-borzoi``, a directory or URL. Named selections use the checkpoint's table, else the bundled one.
    """
    import fsspec

    from .tracks import read_track_table, select_tracks

    summary = describe_model(model, storage_options)
    if head not in summary.heads:
        raise ValueError(f"--head {head!r}: the model has heads {', '.join(summary.heads) or 'none'}")
    n = summary.heads[head]
    table = None
    if tracks is not None:
        if summary.root is not None:
            options = dict(storage_options or {}) if "://" in summary.root else {}
            try:
                with fsspec.open(f"{summary.root}/targets_{head}.txt", "rt", **options) as f:
                    table = read_track_table(f)
            except FileNotFoundError:
                pass  # indices and ranges need no table; select_tracks says so for anything else
        if table is None:
            bundled = FAMILIES[summary.family].bundled_tables.get(head)
            if bundled:
                candidate = read_track_table(DATA_DIR / bundled)
                table = candidate if len(candidate) == n else None
    return summary.geometry, len(select_tracks(tracks, n, table))


def plan_run(
    fasta: str,
    *,
    stride: int | None = None,
    chroms: Sequence[str] | None = None,
    regions: str | None = None,
    model: str = "enformer",
    head: str = "human",
    tracks: str | None = None,
    n_tracks: int | None = None,
    dtype: str = "float16",
    rc: bool = False,
    shifts: Sequence[int] = (0,),
    gpu: str = "A100",
    windows_per_second: float | None = None,
    price_per_hour: float | None = None,
    windows_per_part: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> RunPlan:
    """Plan a run exactly as ``predict`` would tile it, and estimate its output size, GPU time and cost.

    ``model`` defaults to ``enformer``, the full-size official checkpoint (5,313 human tracks), since that is
    what a real run costs; ``demo`` or a checkpoint directory/URL plans for that model instead.
    """
    from .kinds.atlas import AtlasConfig, resolve_windows_per_part, select_bins

    if dtype not in VALUE_BYTES:
        raise ValueError(f"--dtype must be one of {', '.join(VALUE_BYTES)}, got {dtype!r}")
    _check_gpu(gpu, windows_per_second, price_per_hour)
    geometry, n_tracks, summary = _model_plan(model, head, tracks, n_tracks, storage_options)
    stride = geometry.output_span if stride is None else stride
    geometry.check_stride(stride)
    lengths = read_lengths(fasta, storage_options)
    config = AtlasConfig(fasta=fasta, out="", chroms=tuple(chroms) if chroms else None, regions=regions,
                           storage_options=dict(storage_options or {}))
    per_part = resolve_windows_per_part(dataclasses.replace(config, windows_per_part=windows_per_part or None),
                                        geometry, stride)
    chrom_plans = []
    for chrom, bins in select_bins(config, lengths, geometry.bin_size).items():
        parts = plan_chromosome(chrom, lengths[chrom], geometry, stride, per_part, bins)
        chrom_plans.append(ChromPlan(chrom, lengths[chrom], sum(p.units for p in parts),
                                     sum(p.n_rows for p in parts), len(parts)))
    windows_per_second, price_per_hour, source = _rates(gpu, summary.family, windows_per_second, price_per_hour)
    return RunPlan(
        fasta=_name(fasta),
        geometry=geometry,
        stride=stride,
        tracks=n_tracks,
        dtype=dtype,
        passes_per_window=_passes(rc, shifts, summary),
        gpu=gpu,
        windows_per_second=windows_per_second,
        price_per_hour=price_per_hour,
        throughput_source=source,
        chroms=tuple(chrom_plans),
        model=_describe_model(model, head, n_tracks),
        family=summary.family,
        replicates=summary.replicates,
    )


# --- gene and variant runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChromUnits:
    """One chromosome of a gene or variant run: its units (genes, or VCF alleles), model inputs and parts."""

    chrom: str
    units: int
    windows: int  # model inputs: one per gene; per variant part, its distinct positions plus its alleles
    parts: int
    references: int = 0  # variants: the shared reference windows among ``windows``


@dataclass(frozen=True)
class UnitPlan:
    """What a ``predict-genes`` or ``score-variants`` run would compute, and its estimated bytes and GPU time.

    ``rows``: the table's rows (a gene each; an allele each, or with ``--genes`` one per allele and gene in range).
    """

    command: str  # "predict-genes" or "score-variants"
    unit: str  # what ``units`` counts: "genes" or "alleles"
    fasta: str
    geometry: Geometry
    tracks: int
    values_per_row: int  # float32 value columns of a row
    passes_per_window: int
    gpu: str
    windows_per_second: float
    price_per_hour: float
    throughput_source: str
    chroms: tuple[ChromUnits, ...]
    model: str
    inputs: tuple[str, ...]  # one line per input file (and what the counts leave out)
    rows: int

    @property
    def units(self) -> int:
        return sum(c.units for c in self.chroms)

    @property
    def windows(self) -> int:
        return sum(c.windows for c in self.chroms)

    @property
    def parts(self) -> int:
        return sum(c.parts for c in self.chroms)

    @property
    def output_bytes(self) -> int:
        return estimate_bytes(self.rows, self.parts, self.values_per_row, "float32")

    @property
    def gpu_hours(self) -> float:
        return self.windows * self.passes_per_window / self.windows_per_second / 3600

    @property
    def cost(self) -> float:
        return self.gpu_hours * self.price_per_hour

    def __str__(self) -> str:
        variants = self.command == "score-variants"
        head = ("chrom", self.unit, *(("references", "alternates") if variants else ()), "windows", "parts")
        rows = [head]
        for c in (*self.chroms, ChromUnits("total", self.units, self.windows, self.parts,
                                           sum(c.references for c in self.chroms))):
            middle = (f"{c.references:,}", f"{c.windows - c.references:,}") if variants else ()
            rows.append((c.chrom, f"{c.units:,}", *middle, f"{c.windows:,}", f"{c.parts:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        shown = rows if len(rows) <= 42 else rows[:21] + [("...",) + ("",) * (len(head) - 1)] + rows[-20:]
        lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                 for r in shown]
        g = self.geometry
        rows_line = f"{self.rows:,} rows"
        lines += [
            "",
            f"run              {self.command}",
            f"FASTA            {self.fasta}",
            *self.inputs,
            f"model            {self.model}",
            f"geometry         {g.input_length:,} bp in, {g.output_bins} bins of {g.bin_size} bp out",
            f"tracks           {self.tracks:,}; {self.values_per_row:,} float32 values per row",
            f"output (est.)    {human_bytes(self.output_bytes)} of Parquet ({rows_line})",
            f"forward passes   {self.windows * self.passes_per_window:,} "
            f"({self.passes_per_window} per window: reverse complement × shifts × replicates)",
            f"GPU              {self.gpu}: {self.windows_per_second:.1f} windows/s per GPU",
            *(f"                 {line}" for line in self.throughput_source.split("; ")),
            f"GPU time (est.)  {self.gpu_hours:,.2f} GPU-hours ({self.gpu_hours * 60:,.1f} GPU-minutes)",
            f"cost (est.)      ${self.cost:,.2f} at ${self.price_per_hour:.2f}/GPU-hour",
        ]
        return "\n".join(lines)


def plan_genes(
    fasta: str,
    genes: str,
    *,
    gene_types: Sequence[str] | None = None,
    model: str = "enformer",
    head: str = "human",
    tracks: str | None = None,
    n_tracks: int | None = None,
    rc: bool = False,
    shifts: Sequence[int] = (0,),
    gpu: str = "A100",
    windows_per_second: float | None = None,
    price_per_hour: float | None = None,
    genes_per_part: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> UnitPlan:
    """Plan a ``predict-genes`` run: one window per gene of the annotation on the FASTA's chromosomes (after
    ``gene_types``), parts as the run cuts them; bytes, GPU time and cost estimated as for an atlas.

    The annotation is streamed once (``annotation.read_annotation``, as the run reads it), so the gene count is
    the run's own.
    """
    from .annotation import read_annotation
    from .kinds.genes import DEFAULT_GENES_PER_PART

    _check_gpu(gpu, windows_per_second, price_per_hour)
    per_part = genes_per_part or DEFAULT_GENES_PER_PART
    geometry, n_tracks, summary = _model_plan(model, head, tracks, n_tracks, storage_options)
    lengths = read_lengths(fasta, storage_options)
    annotation = read_annotation(genes, lengths, gene_types, storage_options)
    chroms = tuple(ChromUnits(chrom, len(g), len(g), -(-len(g) // per_part)) for chrom, g in annotation.chroms.items())
    rate, price, source = _rates(gpu, summary.family, windows_per_second, price_per_hour)
    return UnitPlan(
        command="predict-genes", unit="genes", fasta=_name(fasta), geometry=geometry, tracks=n_tracks,
        values_per_row=2 * n_tracks, passes_per_window=_passes(rc, shifts, summary), gpu=gpu,
        windows_per_second=rate, price_per_hour=price, throughput_source=source, chroms=chroms,
        model=_describe_model(model, head, n_tracks),
        inputs=tuple(f"{'genes' if i == 0 else '':<17}{line}" for i, line in enumerate(
            [*annotation.summary(), "one window per gene, centred on its first TSS; one row per gene"])),
        rows=annotation.genes,
    )


def plan_variants(
    fasta: str,
    vcf: str,
    *,
    genes: str | None = None,
    gene_types: Sequence[str] | None = None,
    tss_flank: int | None = None,
    scores: Sequence[str] | None = None,
    model: str = "enformer",
    head: str = "human",
    tracks: str | None = None,
    n_tracks: int | None = None,
    rc: bool = False,
    shifts: Sequence[int] = (0,),
    gpu: str = "A100",
    windows_per_second: float | None = None,
    price_per_hour: float | None = None,
    variants_per_part: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> UnitPlan:
    """Plan a ``score-variants`` run (``--genes`` too): its model inputs are, in each part (``variants_per_part``
    consecutive alleles of one chromosome), one reference per distinct position and one alternate per allele.

    The VCF is streamed once, holding one part's positions per chromosome. Alleles on chromosomes the FASTA
    lacks and symbolic ones are not computed; a REF that does not match the FASTA is found only by the run, so
    those alleles are counted (an upper bound). ``--genes`` adds no window: each window's gene bins are built on
    the host and summed on the device; it changes the rows (one per allele and gene in range, one for an allele
    with none), which are counted from the annotation, read once before the VCF, at each distinct position.
    """
    from .annotation import read_annotation
    from .gene_scores import DEFAULT_GENE_SCORES, DEFAULT_TSS_FLANK, GENE_SCORES, window_genes, window_origin
    from .kinds.scoring import SCORES
    from .kinds.variants import DEFAULT_VARIANTS_PER_PART
    from .vcf import ChromMatcher, VcfDigest, read_rows

    _check_gpu(gpu, windows_per_second, price_per_hour)
    if scores is None:
        scores = DEFAULT_GENE_SCORES if genes is not None else ("sad",)
    allowed = (*GENE_SCORES, *SCORES) if genes is not None else SCORES
    bad = [s for s in scores if s not in allowed] if scores else ["nothing"]
    if bad:
        raise ValueError(f"--scores takes a comma-separated subset of {','.join(allowed)}"
                         f"{'' if genes is not None else ' (gene scores need --genes)'}; got {','.join(bad)}")
    per_part = variants_per_part or DEFAULT_VARIANTS_PER_PART
    geometry, n_tracks, summary = _model_plan(model, head, tracks, n_tracks, storage_options)
    lengths = read_lengths(fasta, storage_options)
    match = ChromMatcher(lengths)
    annotation = read_annotation(genes, lengths, gene_types, storage_options) if genes is not None else None
    flank = DEFAULT_TSS_FLANK if tss_flank is None else tss_flank
    rows = 0  # table rows: alleles, or with --genes alleles × their genes in range (at least one row each)
    last: tuple[str, int] | None = None
    genes_here = 1
    counts: dict[str, list[int]] = {}  # chrom -> [alleles, references, computed alleles, parts]
    positions: dict[str, set[int]] = {}  # chrom -> the distinct positions of its current part's computed alleles
    symbolic = 0
    digest = VcfDigest()
    for row in read_rows(vcf, storage_options, digest):
        chrom = match(row.chrom)
        key = chrom if chrom is not None else row.chrom
        count = counts.setdefault(key, [0, 0, 0, 0])
        if count[0] % per_part == 0:  # this allele opens a part
            count[3] += 1
            positions[key] = set()
        count[0] += 1
        rows += 1
        if chrom is None:
            continue
        if row.symbolic:
            symbolic += 1
            continue
        count[2] += 1
        if annotation is not None:
            if (chrom, row.pos) != last:
                last = (chrom, row.pos)
                genes_here = len(window_genes(annotation.on(chrom), window_origin(row.pos - 1, geometry), geometry,
                                              flank).genes)
            rows += max(genes_here, 1) - 1
        if row.pos not in positions[key]:
            positions[key].add(row.pos)
            count[1] += 1
    chroms = tuple(ChromUnits(c, n, refs + alts, parts, refs) for c, (n, refs, alts, parts) in counts.items())
    unknown = sum(counts[c][0] for c in counts if c not in lengths)
    inputs = [f"VCF              {_name(vcf)}: {sum(c.units for c in chroms):,} alleles; not computed: "
              f"{unknown:,} on chromosomes the FASTA lacks, {symbolic:,} symbolic; REF mismatches (found by the "
              "run) are counted: an upper bound"]
    if annotation is not None:
        inputs += [f"{'genes' if i == 0 else '':<17}{line}" for i, line in enumerate(annotation.summary())]
        inputs.append(f"{'':<17}--genes adds no window: each window's gene bins are built on the host and summed "
                      f"on the device (genes × tracks numbers per allele); the GPU time is that of the windows; "
                      f"{rows:,} rows (alleles × genes in range, --tss-flank {flank})")
    rate, price, source = _rates(gpu, summary.family, windows_per_second, price_per_hour)
    if summary.family == "enformer" and summary.replicates == 1:
        source += ("; an Enformer alternate recomputes only the conv tower near its change (full size, on a CPU: "
                   "3.97x cheaper than a window, not measured on a GPU), counted here as a whole window: an "
                   "upper bound")
    return UnitPlan(
        command="score-variants", unit="alleles", fasta=_name(fasta), geometry=geometry, tracks=n_tracks,
        values_per_row=len(scores) * n_tracks, passes_per_window=_passes(rc, shifts, summary), gpu=gpu,
        windows_per_second=rate, price_per_hour=price, throughput_source=source, chroms=chroms,
        model=_describe_model(model, head, n_tracks), inputs=tuple(inputs),
        rows=rows,
    )


def _passes(rc: bool, shifts: Sequence[int], summary: ModelSummary) -> int:
    return (2 if rc else 1) * max(1, len(shifts)) * summary.replicates


def _name(url: str) -> str:
    return os.path.basename(url.rstrip("/")) or url


def _check_gpu(gpu: str, windows_per_second: float | None, price_per_hour: float | None) -> None:
    if gpu not in GPU_PROFILES and (windows_per_second is None or price_per_hour is None):
        raise ValueError(f"--gpu {gpu!r} has no default figures (known: {', '.join(GPU_PROFILES)}); "
                         "give --windows-per-second and --price-per-hour")


def _model_plan(model: str, head: str, tracks: str | None, n_tracks: int | None,
                storage_options: Mapping[str, str] | None) -> tuple[Geometry, int, ModelSummary]:
    """Geometry, planned track count and summary of ``--model`` (``n_tracks`` overrides the selection's count)."""
    if n_tracks is not None:
        if n_tracks < 1:
            raise ValueError(f"--n-tracks must be at least 1, got {n_tracks}")
        geometry, _ = model_tracks(model, head, None, storage_options)
    else:
        geometry, n_tracks = model_tracks(model, head, tracks, storage_options)
    return geometry, n_tracks, describe_model(model, storage_options)


def _rates(gpu: str, family_name: str, windows_per_second: float | None, price_per_hour: float | None,
           ) -> tuple[float, float, str]:
    """Windows/s per GPU, $/GPU-hour and where each comes from: given, else the GPU profile at the family's
    utilisation (measured on an H200) and its FLOPs per window, and the profile's list price."""
    family = FAMILIES[family_name]
    profile = GPU_PROFILES.get(gpu)
    if windows_per_second is not None:
        if windows_per_second <= 0:
            raise ValueError("--windows-per-second must be positive")
        source = "throughput: given"
    else:
        assert profile is not None
        tflop, utilisation = family.tflop_per_window, family.utilisation
        windows_per_second = profile.windows_per_second_at(tflop, utilisation)
        source = (f"throughput ESTIMATE: {profile.peak_bf16_tflops:g} TFLOP/s bf16 peak × "
                  f"{utilisation:.0%} (measured on an H200, compiled) / {tflop} TFLOP per "
                  f"{family.display_name} window (the published model's size)")
    if price_per_hour is None:
        assert profile is not None
        price_per_hour = profile.price_per_gpu_hour
        source += f"; price ESTIMATE: {profile.instance} on-demand list price per GPU"
    return windows_per_second, price_per_hour, source


def _describe_model(model: str, head: str, n_tracks: int) -> str:
    if model in FAMILIES:
        family = FAMILIES[model]
        return f"{family.display_name}, full size ({family.official}; {head} head, {n_tracks:,} tracks planned)"
    if demo_checkpoint(model) is not None:
        return f"{model} (an embedded tiny model, {n_tracks:,} tracks; not what a real run costs)"
    return f"{model} ({head} head, {n_tracks:,} tracks)"


def gpu_table() -> str:
    """The default per-GPU figures, for ``plan --list-gpus``."""
    lines = [f"{'gpu':<9} {'bf16 TFLOP/s':>12} {'windows/s':>9} {'$/GPU-h':>8}  instance (price source)"]
    for p in GPU_PROFILES.values():
        lines.append(f"{p.name:<9} {p.peak_bf16_tflops:>12g} {p.windows_per_second:>9.1f} "
                     f"{p.price_per_gpu_hour:>8.2f}  {p.instance}")
    lines.append(f"windows/s = peak × {_ENFORMER.utilisation:.0%} utilisation (Enformer's, measured on an H200) / "
                 f"{_ENFORMER.tflop_per_window} TFLOP per Enformer window: ESTIMATES for other GPUs; end to end "
                 "at 5,313 float16 tracks a 16-core node wrote 0.67 of that; measure and pass --windows-per-second.")
    return "\n".join(lines)

