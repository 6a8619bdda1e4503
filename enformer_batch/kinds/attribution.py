"""The attribution kind: which bases of each region drive the model's prediction, as a batch job.

Owns, per the contract (docs/contract.md, "Attribution"): the target (``center``, ``region``, ``gene:NAME``), the
run identity, parts, output table and the coverage ``validate`` runs. Regions are read as for mutagenesis
(``chr:start-end`` or a BED, each at most ``MAX_REGION_BP``); each gets one window centred on its midpoint
``m = (s + e) // 2`` (the mutagenesis window) and one row per position: ``region``, ``pos`` (1-based), ``ref``,
``attr`` (input × gradient) and ``hyp_a..hyp_t`` (hypothetical contributions), float32. The gradients are
``attribution.Attributor``'s: one batched backward per batch of windows through the replica ensemble and the
augmentation passes, in fp32 unless ``--precision`` says otherwise.

A part holds whole regions (consecutive in the input, of one chromosome, at most ``regions_per_part``): a
region's gradient comes from one backward over its whole window, so splitting a region would repeat it. Progress
counts regions.

A gene target (``--target gene:NAME --genes GTF``) is the gene's exon bins ``B_g`` in each region's window, the
mean taken over the selected tracks of the gene's strand and the unstranded ones (docs/contract.md, "Genes"). The
driver streams the annotation once keeping only genes whose gene_id or gene_name is NAME, resolves the gene on
each region's chromosome and refuses, in one line, a gene it cannot place; the replicas get the resolved genes
(one per chromosome) with the mode. The run identity records the annotation's sha256, so a resume against a
changed annotation is refused.
"""

from __future__ import annotations

import argparse
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..annotation import Annotation, Gene, named, read_annotation, unversioned
from ..engine import RunError, RunOptions, RunSummary, run_job
from ..gene_scores import exon_bins, track_strands, tracks_on_strand, window_origin
from ..genome import N_CODE, FastaSource, read_codes
from ..settings import CHECKPOINT_MODES, InferenceSettings, ModelInfo, NonFiniteOutput, attribution_precision
from ..store import OutputStore, PartRecord, codes_digest
from ..windows import Geometry
from .arguments import add_model_arguments, run_options
from .base import ChromCoverage, FastaJob, codes_problems
from .mutagenesis import MAX_REGION_BP, Region, parse_regions

if TYPE_CHECKING:  # the driver never imports torch: the gradient code loads on replicas only
    from ..attribution import Attribution, Attributor
    from ..inference import Predictor

BASES = "ACGT"
TARGETS = ("center", "region")  # and gene:NAME
GENE_PREFIX = "gene:"
HYP_COLUMNS = ("hyp_a", "hyp_c", "hyp_g", "hyp_t")
ATTRIBUTION_SCHEMA = pa.schema(
    [pa.field("region", pa.string(), nullable=False), pa.field("pos", pa.int64(), nullable=False),
     pa.field("ref", pa.string(), nullable=False), pa.field("attr", pa.float32(), nullable=False)]
    + [pa.field(name, pa.float32(), nullable=False) for name in HYP_COLUMNS]
)


def target_gene(target: str) -> str | None:
    """The NAME of ``--target gene:NAME`` (a gene_id or gene_name), None for other targets."""
    return target[len(GENE_PREFIX):] if target.startswith(GENE_PREFIX) else None


def check_target(target: str, genes: str | None = None) -> None:
    """``--target``: ``center``, ``region`` or ``gene:NAME`` with ``--genes`` (one line otherwise)."""
    name = target_gene(target)
    if name is not None:
        if not name.strip() or name != name.strip():
            raise ValueError(f"--target {target!r}: give a gene_id or gene_name after 'gene:', e.g. gene:GATA1")
        if genes is None:
            raise ValueError(f"--target {target} needs --genes GTF: the gene models its exons come from")
        return
    if target not in TARGETS:
        raise ValueError(f"--target must be center, region or gene:NAME, got {target!r}")
    if genes is not None:
        raise ValueError(f"--genes is read only for --target gene:NAME (the target here is {target}); drop --genes "
                         "or name a gene")


def gene_bins(geometry: Geometry, gene: Gene, centre: int) -> np.ndarray:
    """``[output_bins]`` bool: the target ``gene:NAME``, the gene's exon bins ``B_g`` in the window centred on
    ``centre`` (the bins sharing at least one base with its exons)."""
    return exon_bins(gene, window_origin(centre, geometry), geometry.bin_size, geometry.output_bins)


def find_target_genes(annotation: Annotation, name: str, regions: list[Region]) -> dict[str, Gene]:
    """The gene ``name`` on each chromosome of ``regions`` (gene_id, with or without its version, matches first,
    else gene_name matches), from an annotation (read for that name with ``read_annotation(gene_names=[name])``,
    or whole); raises ValueError in one line for a gene it cannot place."""
    found = [g for g in annotation if named(frozenset([name]), g.gene_id, g.gene_name)]
    by_id = [g for g in found if name in (g.gene_id, unversioned(g.gene_id))]
    found = by_id or found
    if not found:
        lacking = f" (only on {', '.join(annotation.unknown)}, which the FASTA lacks)" if annotation.unknown else ""
        raise ValueError(f"--target gene:{name}: no gene in {annotation.name} has gene_id or gene_name "
                         f"{name!r}{lacking}")
    chosen: dict[str, Gene] = {}
    for region in regions:
        if region.chrom in chosen:
            continue
        here = [g for g in found if g.chrom == region.chrom]
        if not here:
            where = ", ".join(sorted({f"{g.chrom} ({g.strand})" for g in found}))
            raise ValueError(f"--target gene:{name}: region {region.label} is on {region.chrom}, but {name} is on "
                             f"{where}")
        if len(here) > 1:
            ids = ", ".join(f"{g.gene_id} ({g.strand})" for g in here)
            raise ValueError(f"--target gene:{name} names {len(here)} genes on {region.chrom}: {ids}; name one by "
                             "its gene_id")
        chosen[region.chrom] = here[0]
    return chosen


@dataclass(frozen=True)
class AttributionPart:
    """Regions ``[first, end)`` of the input (the engine's ``Part``), all on ``chrom``; progress counts regions."""

    chrom: str
    first: int
    regions: tuple[Region, ...]
    length: int  # the chromosome's

    @property
    def end(self) -> int:
        return self.first + len(self.regions)

    @property
    def name(self) -> str:
        return f"part-r{self.first:06d}-{self.end:06d}.parquet"

    @property
    def units(self) -> int:
        return len(self.regions)


def attribution_parts(regions: list[Region], lengths: Mapping[str, int], per_part: int) -> list[AttributionPart]:
    """Consecutive regions of one chromosome, at most ``per_part`` to a part, in input order."""
    parts: list[AttributionPart] = []
    group: list[Region] = []
    first = 0
    for i, region in enumerate(regions):
        if group and (region.chrom != group[0].chrom or len(group) == per_part):
            parts.append(AttributionPart(group[0].chrom, first, tuple(group), lengths[group[0].chrom]))
            group, first = [], i
        group.append(region)
    if group:
        parts.append(AttributionPart(group[0].chrom, first, tuple(group), lengths[group[0].chrom]))
    return parts


def plan_parts(identity: Mapping) -> list[AttributionPart]:
    """The parts of an attribution run, from its identity (the run and ``validate`` both plan with this)."""
    regions = [Region(c, s, e, f"{c}:{s}-{e}") for c, s, e in identity["regions"]]
    return attribution_parts(regions, identity["fasta"]["chromosomes"], identity["regions_per_part"])


# --- on the replicas ------------------------------------------------------------------------------------------

# One Attributor per predictor (its memory probe and batch size), built on first use; a predictor runs several
# parts at once (threads), whose backward passes take turns on the device (``Attributor`` locks).
_ATTRIBUTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ATTRIBUTORS_LOCK = threading.Lock()


def attributor_for(predictor: Predictor, checkpoint: str) -> Attributor:
    with _ATTRIBUTORS_LOCK:
        attributor = _ATTRIBUTORS.get(predictor)
        if attributor is None:
            from ..attribution import Attributor

            attributor = _ATTRIBUTORS[predictor] = Attributor(
                predictor, checkpoint=checkpoint, batch_size=predictor.settings.batch_size,
                memory_share=predictor.memory_share)
        return attributor


@dataclass(frozen=True)
class AttributionResult:
    refs: list[str]  # reference letters of every row, regions in order
    attributions: list[Attribution]


@dataclass(frozen=True)
class AttributionMode:
    fasta: FastaSource
    geometry: Geometry
    target: str
    log: bool
    checkpoint: str = "auto"
    unit: str = "region"
    genes: tuple[Gene, ...] = ()  # a gene target's gene on each chromosome of the regions

    def read(self, part: AttributionPart) -> np.ndarray:
        """The windows ``[regions, input_length]`` (uint8 codes), each centred on its region's midpoint."""
        half = self.geometry.input_length // 2
        fasta = self.fasta.open()
        try:
            return np.stack([read_codes(fasta, part.chrom, part.length, r.centre - half, r.centre + half)
                             for r in part.regions])
        finally:
            fasta.close()

    def infer(self, predictor: Predictor, part: AttributionPart, codes: np.ndarray) -> AttributionResult:
        g = self.geometry
        from ..attribution import center_bins, region_bins, region_rows

        rows = [region_rows(g, r.start, r.end, r.centre) for r in part.regions]
        tracks = None
        if self.target == "center":
            bins = np.stack([center_bins(g)] * len(part.regions))
        elif self.target == "region":
            bins = np.stack([region_bins(g, r.start, r.end, r.centre) for r in part.regions])
        else:  # gene:NAME; a part's regions share a chromosome, so one gene
            gene = next(x for x in self.genes if x.chrom == part.chrom)
            bins = np.stack([gene_bins(g, gene, r.centre) for r in part.regions])
            info = predictor.info
            on_strand = tracks_on_strand(gene.strand, info.track_strands or track_strands(info.track_names))
            tracks = np.stack([on_strand] * len(part.regions))
        try:
            got = attributor_for(predictor, self.checkpoint).attribute(codes, bins, rows, log=self.log, tracks=tracks)
        except NonFiniteOutput as e:
            bad = ", ".join(part.regions[k].label for k in e.window_indices[:3])
            raise RunError(f"the model's target or its gradient is NaN or infinite for region(s) {bad}") from None
        refs = [BASES[c] if c != N_CODE else "N" for k, (lo, hi) in enumerate(rows) for c in codes[k, lo:hi]]
        return AttributionResult(refs, got)

    def table(self, part: AttributionPart, result: AttributionResult, info: ModelInfo) -> pa.Table:
        labels = np.concatenate([np.full(r.end - r.start, r.label, dtype=object) for r in part.regions])
        pos = np.concatenate([np.arange(r.start + 1, r.end + 1, dtype=np.int64) for r in part.regions])
        attr = np.concatenate([a.attr for a in result.attributions])
        hyp = np.concatenate([a.hyp for a in result.attributions])
        columns = [pa.array(labels, pa.string()), pa.array(pos), pa.array(result.refs, pa.string()),
                   pa.array(attr, pa.float32())] + [pa.array(hyp[:, c], pa.float32()) for c in range(4)]
        return pa.Table.from_arrays(columns, schema=ATTRIBUTION_SCHEMA)

    def tally(self, result: AttributionResult) -> tuple[int, dict]:
        return len(result.attributions), {}

    def digest(self, codes: np.ndarray) -> str:
        return codes_digest(codes)


# --- the job --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributionConfig(RunOptions):
    """Attribution of regions (see ``RunOptions`` for the model and replica settings; ``precision`` ``auto`` means
    fp32 here: gradients in bf16 keep 2-3 significant digits)."""

    fasta: str
    regions: str  # chr:start-end, or a BED path or URL
    target: str = "center"  # center, region, or gene:NAME (a gene_id or gene_name of ``genes``)
    log: bool = False
    genes: str | None = None  # GTF/GFF3 path or URL: the gene models of a gene:NAME target
    checkpoint: str = "auto"  # activation checkpointing per augmentation pass (attribution.Attributor)
    max_region_bp: int = MAX_REGION_BP
    regions_per_part: int = 64

    def inference_settings(self, dtype: str = "float32") -> InferenceSettings:
        settings = super().inference_settings(dtype)
        # The model runs eager for gradients: a compiled model would only be compiled for inference.
        return replace(settings, precision=attribution_precision(settings.precision), compile="off")

    def check(self) -> None:
        super().check()
        check_target(self.target, self.genes)
        if self.compile == "on":  # gradients run eager; saying so beats ignoring the flag
            raise ValueError("attribute runs the model eager (torch.compile here compiles inference only): drop "
                             "--compile on")
        if self.checkpoint not in CHECKPOINT_MODES:
            raise ValueError(f"--checkpoint must be one of {', '.join(CHECKPOINT_MODES)}, got {self.checkpoint!r}")
        if self.regions_per_part < 1:
            raise ValueError("regions_per_part must be at least 1")


class AttributionJob(FastaJob):
    options: AttributionConfig
    annotation: Annotation | None = None  # a gene target's annotation, read for that gene only
    target_genes: Mapping[str, Gene] = {}  # chromosome -> the target gene there (a gene target only)

    def make_mode(self, geometry: Geometry) -> AttributionMode:
        o = self.options
        return AttributionMode(self.fasta, geometry, o.target, o.log, o.checkpoint,
                               genes=tuple(self.target_genes.values()))

    def read_inputs(self) -> None:
        """The regions; for a gene target, the annotation streamed once for that gene, placed on each region's
        chromosome (before Ray starts: an unknown or misplaced gene costs no model load)."""
        o = self.options
        self.regions = parse_regions(o.regions, self.lengths, o.storage_options, o.max_region_bp)
        name = target_gene(o.target)
        if name is not None:
            self.annotation = read_annotation(o.genes, self.lengths, storage_options=o.storage_options,
                                              gene_names=[name])
            self.target_genes = find_target_genes(self.annotation, name, self.regions)

    def identity_fields(self, info: ModelInfo, previous: Mapping | None) -> dict:
        fields = {
            "mode": "attribution",
            "regions": [[r.chrom, r.start, r.end] for r in self.regions],
            "target": self.options.target,
            "log": self.options.log,
            "regions_per_part": self.options.regions_per_part,
        }
        if self.annotation is not None:  # only for gene targets: other runs keep the identity they always had
            strands = info.track_strands or track_strands(info.track_names)
            self.check_gene_target(info.geometry, strands, info.track_names)
            a = self.annotation
            fields["genes"] = {
                "name": a.name, "sha256": a.sha256, "format": a.format,
                "target": [{"chrom": g.chrom, "gene_id": g.gene_id, "gene_name": g.gene_name, "strand": g.strand}
                           for g in self.target_genes.values()],
                "track_strands": list(strands),
            }
        return fields

    def check_gene_target(self, geometry: Geometry, strands: tuple[str, ...], names: tuple[str, ...]) -> None:
        """One line for a gene target that is empty somewhere: a region whose window's output misses every exon of
        the gene, or a gene strand none of the selected tracks is on (nor unstranded)."""
        name = target_gene(self.options.target)
        for gene in self.target_genes.values():
            if not tracks_on_strand(gene.strand, strands).any():
                raise ValueError(f"--target gene:{name}: {gene.gene_id} is on the {gene.strand} strand and none of "
                                 f"the selected tracks ({', '.join(names[:5])}{' ...' if len(names) > 5 else ''}) "
                                 "is on it or unstranded")
        for r in self.regions:
            gene = self.target_genes[r.chrom]
            if not gene_bins(geometry, gene, r.centre).any():
                o = window_origin(r.centre, geometry)
                raise ValueError(f"--target gene:{name}: no exon of {gene.gene_id} ({r.chrom}:{gene.start}-{gene.end})"
                                 f" lies in the output of region {r.label}'s window, [{o}, {o + geometry.output_span})"
                                 f" on {r.chrom}")

    def totals(self, identity: Mapping, parts: list[AttributionPart]) -> dict:
        return {"parts": len(parts), "units": len(self.regions),
                "positions": sum(r.end - r.start for r in self.regions)}

    def notes(self) -> tuple[str, ...]:
        if self.annotation is None:
            return ()
        genes = ", ".join(f"{g.gene_id} ({g.gene_name}) on {g.chrom} ({g.strand})" for g in self.target_genes.values())
        return (f"target gene from {self.annotation.name}: {genes}",)


def attribute(config: AttributionConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Attributions of every position of every region (or resume computing them); returns the run's summary."""
    return run_job(AttributionJob(config, KIND), on_part)


# --- validation -----------------------------------------------------------------------------------------------


class AttributionCoverage:
    """Attribution tables: each part holds every position of each of its regions once, and nothing else."""

    unit = "rows"

    def __init__(self, identity: Mapping, store: OutputStore):
        self.store = store
        self.geometry = Geometry(**identity["geometry"])
        self.plan = plan_parts(identity)
        self.coverage: dict[str, ChromCoverage] = {}
        for part in self.plan:
            cov = self.coverage.setdefault(part.chrom, ChromCoverage(part.chrom, part.length, 0))
            cov.bins_expected += sum(r.end - r.start for r in part.regions)

    def fasta_chromosomes(self) -> list[str]:
        return list(self.coverage)

    def planned_paths(self) -> dict:
        return {self.store.part_relpath(p.chrom, p.name): p for p in self.plan}

    def with_inputs(self, planned: Mapping, inputs: Mapping[str, str], storage_options) -> Mapping:
        return planned

    def checker(self, inputs: Mapping[str, str], fasta: str | None, storage_options) -> AttributionChecker:
        return AttributionChecker(ATTRIBUTION_SCHEMA, fasta=fasta,
                                  storage_options=tuple(sorted(dict(storage_options or {}).items())),
                                  geometry=self.geometry)

    def merge(self, path: str, part: AttributionPart, rows: int) -> None:
        cov = self.coverage[part.chrom]
        cov.bins_found += rows
        cov.parts += 1

    def finish(self, complete: bool, inputs: Mapping[str, str], storage_options,
               ) -> tuple[list[ChromCoverage], list[str]]:
        return list(self.coverage.values()), []


@dataclass(frozen=True)
class AttributionChecker:
    """Checks an attribution part whole in its task: every position of each of its regions exactly once."""

    schema: pa.Schema
    columns: tuple[str, ...] = ("region", "pos", "ref")
    fasta: str | None = None  # compare the bases under each part with this genome's (None: not checked)
    storage_options: tuple = ()
    geometry: Geometry | None = None

    def summarise(self, path: str, part: AttributionPart, table: pa.Table) -> tuple[list[str], int]:
        got = Counter(zip(table.column("region").to_pylist(), table.column("pos").to_pylist()))
        expected = Counter((r.label, q + 1) for r in part.regions for q in range(r.start, r.end))
        problems = []
        if got != expected:
            extra, missing = got - expected, expected - got
            what = (f"{sum(missing.values())} position(s) missing" if missing else "") + (
                ", " if missing and extra else "") + (f"{sum(extra.values())} unexpected or repeated" if extra else "")
            problems.append(f"part {path}: not every position of its regions exactly once ({what})")
        if any(b not in "ACGTN" for b in set(table.column("ref").to_pylist())):
            problems.append(f"part {path}: a ref that is not A, C, G, T or N")
        return problems, table.num_rows

    def check_codes(self, path: str, part: AttributionPart, recorded: str) -> list[str]:
        reader = AttributionMode(FastaSource(self.fasta, dict(self.storage_options)), self.geometry, "center", False)
        labels = ", ".join(r.label for r in part.regions[:3]) + (", ..." if len(part.regions) > 3 else "")
        return codes_problems(reader, self.fasta, path, part, recorded, f"regions {labels}")


# --- the kind -------------------------------------------------------------------------------------------------


class AttributionKind:
    """Attribution (``enformer-batch attribute``)."""

    name = "attribution"
    command = "attribute"
    config = AttributionConfig
    help = "which bases drive a prediction: input x gradient and hypothetical contributions over regions"
    description = (
        f"For each region [s, e) (at most {MAX_REGION_BP:,} bp), one model input centred on m = (s + e) // 2; the "
        "target f = sum over bins B of the mean over --tracks of the prediction (B: the centre bin, with "
        "--target region the bins overlapping the region, with --target gene:NAME --genes GTF the gene's exon bins, "
        "averaged over the tracks of its strand and the unstranded ones; --log: ln(1 + f)), differentiated through "
        "--rc/--shifts and replicate ensembles. Rows: region, pos (1-based), ref, attr (input x gradient), "
        "hyp_a..hyp_t (gradient minus its mean over the four bases: TF-MoDISco's hypothetical contributions), float32. "
        "--precision auto means fp32 here. Re-running resumes; export with export-attributions."
    )
    validate_inputs: Mapping[str, str] = {}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("fasta", help="FASTA path or URL")
        parser.add_argument("regions", help="chr:start-end (0-based half-open, commas allowed) or a BED file/URL")
        add_model_arguments(parser)
        parser.add_argument("--target", default="center", help="center: the centre output bin; region: the bins "
                            "overlapping the region; gene:NAME (a gene_id or gene_name of --genes): the gene's exon "
                            "bins, on the tracks of its strand and the unstranded ones")
        parser.add_argument("--genes", default=None, metavar="GTF",
                            help="gene models for --target gene:NAME: GTF or GFF3, plain or gzip; path or fsspec URL")
        parser.add_argument("--log", action="store_true", help="differentiate ln(1 + target)")
        parser.add_argument("--checkpoint", default="auto", choices=CHECKPOINT_MODES,
                            help="activation checkpointing per augmentation pass; auto: only where one window "
                            "does not fit in memory without it")
        parser.add_argument("--regions-per-part", type=int, default=64, help="regions per output part")

    def config_from_args(self, args: argparse.Namespace) -> AttributionConfig:
        return AttributionConfig(fasta=args.fasta, regions=args.regions, target=args.target, log=args.log,
                                 genes=args.genes, checkpoint=args.checkpoint, regions_per_part=args.regions_per_part,
                                 **run_options(args))

    def run(self, config: AttributionConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
        return attribute(config, on_part)

    def parts(self, identity: Mapping) -> list[AttributionPart]:
        return plan_parts(identity)

    def schema(self, identity: Mapping) -> pa.Schema:
        return ATTRIBUTION_SCHEMA

    def coverage(self, identity: Mapping, store: OutputStore) -> AttributionCoverage:
        return AttributionCoverage(identity, store)


KIND = AttributionKind()
