"""The variants kind: VCF rows → reference and alternate predictions → per-track scores.

Owns what is particular to variants, per the contract (docs/contract.md, "Variants and sequence edits"): the
request and its run identity; parts of consecutive rows of one output chromosome, planned from the row counts
of a first pass over the VCF (``plan_parts``) and filled by a second, streaming one (``StreamedParts``; a resume
streams once more to re-read the genome under committed parts); the output table; the ``--strict`` REF check;
and the coverage ``validate`` runs (with ``--vcf``: every input row exactly once; with ``--fasta`` too, the
bases under every part).
Statuses, shared reference windows and scores are the scoring core's (``kinds.scoring``); orchestration,
resume and commit the engine's. With ``--genes`` (docs/contract.md, "Genes"), each part carries the genes near
its rows, each window gets its genes' bin masks on the host, gene scores are reduced on the device
(``gene_scores``), and the table has one row per (allele, gene in range).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..annotation import Annotation, ChromGenes, parse_gene_types, read_annotation
from ..engine import RunError, RunOptions, RunSummary, run_job, stage
from ..gene_scores import (
    DEFAULT_GENE_SCORES,
    DEFAULT_TSS_FLANK,
    GENE_FIELDS,
    GENE_SCORES,
    GeneReducer,
    check_tss_flank,
    genes_near,
    split_scores,
    track_strands,
    variant_gene_table,
    window_genes,
    window_origin,
)
from ..genome import FastaSource
from ..settings import ModelInfo
from ..store import OutputStore, PartRecord, codes_digest
from ..vcf import ChromMatcher, VariantRow, VcfDigest, read_rows, scan
from ..windows import Geometry
from .arguments import add_gene_arguments, add_model_arguments, run_options, str_list
from .base import FastaJob
from .scoring import (
    GENE_STATUSES,
    SCORED,
    SCORES,
    RowChecker,
    RowCoverage,
    RowRange,
    VariantInputs,
    VariantResult,
    check_scores,
    read_variant_inputs,
    row_part_bounds,
    row_status,
    score_part,
    scores_schema,
    scores_table,
    status_counts,
)

if TYPE_CHECKING:
    from ..inference import Predictor

DEFAULT_VARIANTS_PER_PART = 256


@dataclass(frozen=True)
class VariantConfig(RunOptions):
    """One variant-scoring run (see ``RunOptions`` for the model and replica settings)."""

    vcf: str
    fasta: str
    scores: tuple[str, ...] = ("sad",)
    strict: bool = False  # a REF that does not match the FASTA fails the run (before anything is computed)
    group_bp: int = 0  # >0: variants within this many bp share one reference window (not exactly centred)
    variants_per_part: int = DEFAULT_VARIANTS_PER_PART
    genes: str | None = None  # a GTF/GFF3: one row per (allele, gene in range), gene scores (docs/contract.md)
    tss_flank: int = DEFAULT_TSS_FLANK  # bins each side of a TSS's bin
    gene_types: tuple[str, ...] | None = None  # keep only genes of these gene_type / gene_biotype values

    def check(self) -> None:
        super().check()
        scores = tuple(self.scores)
        if self.genes is None:
            given = [s for s in scores if s in GENE_SCORES]
            if given:
                raise ValueError(f"--scores {','.join(given)} are gene scores: they need --genes GTF")
            check_scores(scores)
        else:
            allowed = GENE_SCORES + SCORES
            unknown = [s for s in scores if s not in allowed]
            if unknown or not scores:
                raise ValueError(f"--scores takes a comma-separated subset of {','.join(allowed)}; got "
                                 f"{','.join(scores) or 'nothing'}")
            if len(set(scores)) != len(scores):
                raise ValueError(f"--scores lists a score twice: {','.join(scores)}")
            if self.group_bp:
                raise ValueError("--genes scores each variant in its own centred window: drop --group-bp")
            check_tss_flank(self.tss_flank)
            parse_gene_types(self.gene_types)
        if self.group_bp < 0:
            raise ValueError(f"--group-bp must be 0 (off) or positive, got {self.group_bp}")
        if self.variants_per_part < 1:
            raise ValueError("variants_per_part must be at least 1")


@dataclass(frozen=True)
class VariantPart(RowRange):
    """Rows ``[first, end)`` of one output chromosome, in VCF order (the engine's ``Part``)."""

    chrom: str
    first: int
    end: int
    length: int  # the FASTA chromosome's length; 0 for a chromosome the FASTA lacks
    rows: tuple[VariantRow, ...] = ()
    genes: ChromGenes | None = None  # with --genes: the annotation's genes near these rows (only those)


def plan_parts(identity: Mapping) -> list[VariantPart]:
    """The parts of a variant run, from its identity (without their rows: the run fills them from the VCF)."""
    lengths = identity["fasta"]["chromosomes"]
    return [VariantPart(chrom, first, end, lengths.get(chrom, 0))
            for chrom, first, end in row_part_bounds(identity["vcf"]["rows_by_chrom"], identity["variants_per_part"])]


def stream_parts(
    url: str, planned: Iterable[VariantPart], lengths: Mapping[str, int], digest: VcfDigest,
    storage_options: Mapping[str, str] | None = None,
) -> Iterator[VariantPart]:
    """The planned parts filled from a second pass over the VCF, each yielded as soon as its last row is read.

    The driver holds at most one unfinished part per chromosome, whatever the size of the VCF.
    """
    match = ChromMatcher(lengths)
    queues: dict[str, list[VariantPart]] = {}
    for part in planned:
        queues.setdefault(part.chrom, []).append(part)
    for queue in queues.values():
        queue.reverse()  # popped from the end, in plan order
    buffers: dict[str, list[VariantRow]] = {}
    check = VcfDigest()
    for row in read_rows(url, storage_options, check):
        chrom = match(row.chrom) or row.chrom
        queue = queues.get(chrom)
        if not queue:  # more rows than the first pass counted
            raise RunError(f"{url} changed while the run was reading it; re-run to start from its new content")
        buffer = buffers.setdefault(chrom, [])
        buffer.append(row)
        if len(buffer) == queue[-1].units:
            yield dataclasses.replace(queue.pop(), rows=tuple(buffer))
            buffer.clear()
    if check.sha256 != digest.sha256 or any(buffers.values()) or any(queues.values()):
        raise RunError(f"{url} changed while the run was reading it; re-run to start from its new content")


@dataclass(frozen=True)
class StreamedParts:
    """The planned parts filled from the VCF, re-streamed each time they are iterated (``stream_parts``).

    What a variant run's plan holds: a resume iterates it once to check the genome under its committed parts,
    then again to compute the rest; neither holds more than a few parts' rows.
    """

    url: str
    planned: Sequence[VariantPart]
    lengths: Mapping[str, int]
    digest: VcfDigest
    storage_options: Mapping[str, str] | None = None

    def __iter__(self) -> Iterator[VariantPart]:
        return stream_parts(self.url, self.planned, self.lengths, self.digest, self.storage_options)


VARIANT_FIELDS = (
    pa.field("pos", pa.int64(), nullable=False), pa.field("id", pa.string()),
    pa.field("ref", pa.string(), nullable=False), pa.field("alt", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
)


def variant_schema(scores: Sequence[str], track_names: Sequence[str], genes: bool = False) -> pa.Schema:
    """A variant table's schema; with ``genes``, the gene columns follow ``status`` (one row per allele × gene)."""
    return scores_schema(VARIANT_FIELDS + (GENE_FIELDS if genes else ()), scores, track_names)


def variant_table(part: VariantPart, result: VariantResult, scores: Sequence[str], track_names: Sequence[str],
                  ) -> pa.Table:
    rows = part.rows
    leading = [[r.pos for r in rows], [r.id for r in rows], [r.ref for r in rows], [r.alt for r in rows],
               result.statuses]
    return scores_table(leading, variant_schema(scores, track_names), result)


@dataclass(frozen=True)
class VariantMode:
    """VCF rows in, one row of scores per allele out (the engine's ``Mode`` for variants)."""

    fasta: FastaSource
    input_length: int
    scores: tuple[str, ...]
    group_bp: int = 0
    unit: str = "variant"
    genes: bool = False  # --genes: gene rows and gene scores
    geometry: Geometry | None = None  # the model's (needed for gene bins)
    tss_flank: int = DEFAULT_TSS_FLANK

    def read(self, part: VariantPart) -> VariantInputs:
        inputs = read_variant_inputs(self.fasta, part.chrom, part.length, part.rows, self.input_length,
                                     self.group_bp)
        if self.genes:  # each window's genes in range and their bin masks, built here on the host
            half = self.input_length // 2
            centres: dict[int, int] = {}
            for j, i in enumerate(inputs.rows):
                centres[int(inputs.group[j])] = half + part.rows[int(i)].pos - 1 - int(inputs.offset[j])
            genes = part.genes if part.genes is not None else ChromGenes.empty(part.chrom)
            inputs.gene_windows = [
                window_genes(genes, window_origin(centres[g], self.geometry), self.geometry, self.tss_flank)
                for g in range(len(inputs.windows))]
        return inputs

    def infer(self, predictor: Predictor, part: VariantPart, inputs: VariantInputs) -> VariantResult:
        if not self.genes:
            result = score_part(predictor, inputs, self.scores)
        else:
            gene_names, variant_names = split_scores(self.scores)
            windows = inputs.gene_windows or []
            reducer = GeneReducer(windows, inputs.group, gene_names, predictor.device)
            result = score_part(predictor, inputs, variant_names, reducer if gene_names else None)
            statuses = list(result.statuses)
            for j, row in enumerate(inputs.rows):  # a scored allele with no gene in range
                if not len(windows[int(inputs.group[j])]):
                    statuses[int(row)] = "no_gene"
            result = dataclasses.replace(result, statuses=statuses, genes=reducer.collect(len(inputs.rows)),
                                         gene_windows=windows, group=inputs.group)
        bad = ~np.isfinite(result.scores).all(axis=(1, 2))
        if result.genes is not None:
            bad |= np.array([v is not None and not np.isfinite(v).all() for v in result.genes], bool)
        if bad.any():
            lines = [part.rows[int(result.rows[j])].line for j in np.flatnonzero(bad)[:5]]
            raise RunError(f"{part.chrom}: the model returned NaN or infinity for the variant(s) on VCF line(s) "
                           f"{lines}")
        return result

    def table(self, part: VariantPart, result: VariantResult, info: ModelInfo) -> pa.Table:
        if not self.genes:
            return variant_table(part, result, self.scores, info.track_names)
        rows = part.rows
        leading = [[r.pos for r in rows], [r.id for r in rows], [r.ref for r in rows], [r.alt for r in rows]]
        return variant_gene_table(
            leading, variant_schema(self.scores, info.track_names, genes=True), result.statuses,
            [r.pos - 1 for r in rows], [int(i) for i in result.rows], result.gene_windows or [],
            [int(g) for g in result.group] if result.group is not None else [], result.genes or [],
            result.scores, self.scores, info.track_strands or track_strands(info.track_names))

    def tally(self, result: VariantResult) -> tuple[int, dict]:
        return status_counts(result)

    def digest(self, inputs: VariantInputs) -> str:
        return codes_digest(inputs.windows)


@functools.lru_cache(maxsize=4)
def variant_reader(fasta: str, storage_options: tuple, input_length: int, group_bp: int) -> VariantMode:
    """The variant reader stage on ``fasta``, once per task process: what ``validate --fasta`` re-reads with."""
    return VariantMode(FastaSource(fasta, dict(storage_options)), input_length, (), group_bp)


# --- the job --------------------------------------------------------------------------------------


class VariantJob(FastaJob):
    """The driver's side of a variant-scoring run."""

    options: VariantConfig
    annotation: Annotation | None = None

    def make_mode(self, geometry: Geometry) -> VariantMode:
        o = self.options
        return VariantMode(self.fasta, geometry.input_length, tuple(o.scores), o.group_bp, genes=o.genes is not None,
                           geometry=geometry, tss_flank=o.tss_flank)

    def read_inputs(self) -> None:
        """Pass over the VCF once: every record checked, rows counted, content hashed; with ``--genes``, stream
        the annotation once and keep its genes' exons and TSSs."""
        self.digest = scan(self.options.vcf, self.lengths, self.options.storage_options)
        if self.options.strict:
            check_ref_alleles(self.options.vcf, self.fasta, self.lengths, self.options.storage_options)
        if self.options.genes is not None:
            stage(self.options, f"reading gene models from {self.options.genes} (streamed: every exon line is checked)")
            self.annotation = read_annotation(self.options.genes, self.lengths, self.options.gene_types,
                                              self.options.storage_options)
            self.annotation.require_genes(self.fasta.name)

    def identity_fields(self, info: ModelInfo, previous: Mapping | None) -> dict:
        o, geometry, digest = self.options, info.geometry, self.digest
        if o.group_bp > geometry.output_span // 2:
            raise ValueError(f"--group-bp {o.group_bp} is more than half the model's output span "
                             f"({geometry.output_span // 2} bp): grouped variants would fall outside the output")
        fields = {
            "mode": "variants",
            "vcf": {"name": os.path.basename(o.vcf.rstrip("/")), "sha256": digest.sha256, "records": digest.records,
                    "rows_by_chrom": dict(digest.rows_by_chrom)},
            "scores": list(o.scores),
            "group_bp": o.group_bp,
            "variants_per_part": o.variants_per_part,
        }
        annotation = self.annotation
        if annotation is not None:  # only then: runs without --genes keep the identity they always had
            fields["genes"] = {
                "name": annotation.name, "sha256": annotation.sha256, "format": annotation.format,
                "gene_types": list(o.gene_types) if o.gene_types is not None else None, "tss_flank": o.tss_flank,
                "genes": annotation.genes,
                "track_strands": list(info.track_strands or track_strands(info.track_names)),
            }
        return fields

    def totals(self, identity: Mapping, parts: list[VariantPart]) -> dict:
        return {"parts": len(parts), "units": self.digest.rows, "rows": self.digest.rows}

    def feed(self, parts: list[VariantPart]) -> Iterable[VariantPart]:
        streamed = StreamedParts(self.options.vcf, parts, self.lengths, self.digest, self.options.storage_options)
        if self.annotation is None:
            return streamed
        return GenesNear(streamed, self.annotation, self.mode.geometry, self.options.tss_flank)

    def notes(self) -> tuple[str, ...]:
        digest, notes = self.digest, []
        if digest.renamed:
            pairs = ", ".join(f"{a}→{b}" for a, b in list(digest.renamed.items())[:5])
            notes.append(f"chromosome names matched through a 'chr' prefix: {pairs}"
                         + (" ..." if len(digest.renamed) > 5 else ""))
        if digest.unknown:
            notes.append(f"not in the FASTA (status unknown_chrom): {', '.join(list(digest.unknown)[:5])}"
                         + (" ..." if len(digest.unknown) > 5 else ""))
        if self.annotation is not None:
            notes += self.annotation.summary()
        return tuple(notes)


@dataclass(frozen=True)
class GenesNear:
    """Streamed parts, each with the genes near its rows, re-streamed each time they are iterated (as
    ``StreamedParts``: a resume iterates the plan twice)."""

    parts: Iterable[VariantPart]
    annotation: Annotation
    geometry: Geometry
    tss_flank: int

    def __iter__(self) -> Iterator[VariantPart]:
        return with_genes(self.parts, self.annotation, self.geometry, self.tss_flank)


def with_genes(parts: Iterable[VariantPart], annotation: Annotation, geometry: Geometry, tss_flank: int,
               ) -> Iterator[VariantPart]:
    """Each part with the genes that may be in range of its rows' windows (none on unknown chromosomes)."""
    for part in parts:
        genes = annotation.on(part.chrom)
        near = genes_near(genes, [r.pos - 1 for r in part.rows], geometry, tss_flank) if part.length \
            else ChromGenes.empty(part.chrom)
        yield dataclasses.replace(part, genes=near)


def check_ref_alleles(url: str, fasta_source: FastaSource, lengths: Mapping[str, int],
                      storage_options: Mapping[str, str] | None = None) -> None:
    """``--strict``: fail on the first REF that does not match the FASTA, naming its line."""
    match = ChromMatcher(lengths)
    fasta = fasta_source.open()
    try:
        for row in read_rows(url, storage_options):
            chrom = match(row.chrom)
            if chrom is None or row.symbolic:
                continue
            if row_status(row, fasta, chrom, lengths[chrom]) == "ref_mismatch":
                p = row.pos - 1
                found = fasta[chrom][p : min(p + len(row.ref), lengths[chrom])]
                raise ValueError(f"{url} line {row.line}: REF {row.ref} does not match the FASTA's {found!r} at "
                                 f"{chrom}:{row.pos} (--strict)")
    finally:
        fasta.close()


def score_variants(config: VariantConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Score every ALT allele of a VCF (or resume doing so) and return the run's summary.

    Raises ValueError (or a subclass) on bad input, StoreError when ``--out`` cannot be used as asked, and
    RunError when a part fails; committed parts are kept and re-running the same call resumes.
    """
    summary = run_job(VariantJob(config, KIND), on_part)
    scored = sum(summary.counts.get(s, 0) for s in (*SCORED, "no_gene"))
    return dataclasses.replace(summary, notes=(f"scored: {scored} of {summary.units_computed} rows computed in this "
                                               "run",) + summary.notes)


# --- validation -----------------------------------------------------------------------------------


class VariantCoverage(RowCoverage):
    """Variant-table coverage: each part holds its planned rows; with ``--vcf``, every input row exactly once.

    A table scored with ``--genes`` has a row per (allele, gene in range): its parts are counted in alleles
    (``GeneRowChecker``), and with ``--vcf`` and ``--genes`` each allele must have exactly its genes in range,
    recomputed from the annotation (one null-gene row when it has none or was not scored).
    """

    def __init__(self, identity: Mapping, store: OutputStore):
        super().__init__(identity, store, plan_parts(identity), KIND.schema(identity),
                         identity["vcf"]["rows_by_chrom"], keys=("pos", "id", "ref", "alt"),
                         reader=functools.partial(variant_reader, input_length=identity["geometry"]["input_length"],
                                                  group_bp=identity["group_bp"]))
        self.rows_read = False  # whether with_inputs filled the parts with their rows (their windows are known)
        self.genes: Mapping | None = identity.get("genes")
        self.not_scored: set = set()  # with genes: alleles the table says were not scored
        self.alleles: Counter = Counter()  # with genes: each allele of the table once

    def wants_keys(self, inputs: Mapping[str, str]) -> bool:
        return "vcf" in inputs  # without an input to compare with, row counts suffice

    def checker(self, inputs: Mapping[str, str], fasta: str | None, storage_options) -> RowChecker:
        if not self.genes:
            return super().checker(inputs, fasta, storage_options)
        return GeneRowChecker(self.schema, ("status", *self.keys, "gene_id", "gene_strand"), self.keys,
                              frozenset(GENE_STATUSES))

    def merge(self, path: str, planned: VariantPart, summary: tuple) -> None:
        super().merge(path, planned, summary[:2])
        if len(summary) > 2:
            self.not_scored.update((planned.chrom, *allele) for allele in summary[2])
            self.alleles.update((planned.chrom, *allele) for allele in summary[3])

    def finish(self, complete: bool, inputs: Mapping[str, str], storage_options):
        lines, problems = super().finish(complete, inputs, storage_options)
        if "genes" in inputs and not self.genes:
            problems.append("--genes checks tables scored with --genes (and predict-genes tables); this one was not")
        elif "genes" in inputs and "vcf" not in inputs:
            problems.append("--genes checks a variant table's genes together with --vcf (the alleles they are of)")
        return lines, problems

    def with_inputs(self, planned: Mapping, inputs: Mapping[str, str], storage_options) -> Mapping:
        """The parts with their rows from ``--vcf`` (held until the check ends, as ``expected`` holds every
        row's key); as planned without one, or when it is not the VCF the table was scored from."""
        vcf = inputs.get("vcf")
        if vcf is None:
            self.input_problems.append("--fasta compares the bases under a variant table's parts only with --vcf "
                                       "too (the windows are centred on its rows); pass the VCF it was scored from")
            return planned
        by_part = {(p.chrom, p.first): path for path, p in planned.items()}
        digest = VcfDigest(sha256=self.identity["vcf"]["sha256"])
        filled = dict(planned)
        try:
            for part in stream_parts(vcf, list(planned.values()), self.identity["fasta"]["chromosomes"], digest,
                                     storage_options):
                filled[by_part[part.chrom, part.first]] = part
        except RunError:  # another VCF: ``expected`` reports it; its rows say nothing of the windows
            return planned
        self.rows_read = True
        return filled

    def checks_codes(self, inputs: Mapping[str, str]) -> bool:
        return self.rows_read

    def expected(self, inputs: Mapping[str, str], storage_options) -> Counter | None:
        """Every input row, from the VCF (None without one); a different VCF is a problem of its own."""
        vcf = inputs.get("vcf")
        if vcf is None:
            return None
        digest = VcfDigest()
        match = ChromMatcher(self.identity["fasta"]["chromosomes"])
        rows = ((match(r.chrom) or r.chrom, r) for r in read_rows(vcf, storage_options, digest))
        if self.genes and "genes" in inputs:
            want = self.expected_gene_rows(rows, inputs["genes"], storage_options)
        elif self.genes:  # without the annotation: the table's alleles against the VCF's, gene columns aside
            want = Counter((chrom, r.pos, r.id, r.ref, r.alt) for chrom, r in rows)
            self.found = self.alleles
        else:
            want = Counter((chrom, r.pos, r.id, r.ref, r.alt) for chrom, r in rows)
        if digest.sha256 != self.identity["vcf"]["sha256"]:
            self.input_problems.append(f"{vcf} is not the VCF this table was scored from (its content hash differs)")
        return want

    def expected_gene_rows(self, rows: Iterable, genes_url: str, storage_options) -> Counter:
        """Each allele with each of its genes in range, from the annotation (the run's gene types, geometry and TSS
        flank); one null-gene row for an allele not scored or without genes."""
        lengths = self.identity["fasta"]["chromosomes"]
        annotation = read_annotation(genes_url, lengths, self.genes.get("gene_types"), storage_options)
        if annotation.sha256 != self.genes["sha256"]:
            self.input_problems.append(f"{genes_url} is not the annotation this table was scored with (its content "
                                       "hash differs)")
        geometry = Geometry(**self.identity["geometry"])
        flank = int(self.genes["tss_flank"])
        # Alleles at one position share their genes: the last position's are kept (a VCF's rows come by position),
        # not every position's, so memory does not follow the VCF.
        last: tuple[str, int] | None = None
        genes_here: list = []
        want: Counter = Counter()
        for chrom, r in rows:
            allele = (chrom, r.pos, r.id, r.ref, r.alt)
            if chrom not in lengths or r.symbolic or allele in self.not_scored:
                want[(*allele, None, None)] += 1
                continue
            if (chrom, r.pos) != last:
                last = (chrom, r.pos)
                window = window_genes(annotation.on(chrom), window_origin(r.pos - 1, geometry), geometry, flank)
                genes_here = [(g.gene_id, g.strand) for g in window.genes] or [(None, None)]
            for gene in genes_here:
                want[(*allele, *gene)] += 1
        return want


@dataclass(frozen=True)
class GeneRowChecker(RowChecker):
    """A variant part scored with ``--genes``: its rows are alleles × genes. Rows of one allele are consecutive,
    with (gene_id, strand) strictly increasing; an allele without gene columns has one row. The planned count is
    of alleles; statuses must agree with the gene columns (a gene row is scored, a null-gene row is ``no_gene``
    or not scored)."""

    def summarise(self, path: str, planned: VariantPart, table: pa.Table) -> tuple[list[str], tuple]:
        problems = []
        statuses = table.column("status").to_pylist()
        keys = list(zip(*(table.column(c).to_pylist() for c in self.keys)))
        genes = list(zip(table.column("gene_id").to_pylist(), table.column("gene_strand").to_pylist()))
        allele_keys, not_scored, bad_status = [], [], 0
        for i, (key, gene, status) in enumerate(zip(keys, genes, statuses)):
            if i == 0 or key != keys[i - 1] or gene[0] is None or genes[i - 1][0] is None or gene <= genes[i - 1]:
                allele_keys.append(key)
            if gene[0] is None:
                bad_status += status in SCORED
                if status not in (*SCORED, "no_gene"):
                    not_scored.append(key)
            else:
                bad_status += status not in SCORED
        if len(allele_keys) != planned.end - planned.first:
            problems.append(f"part {path}: {len(allele_keys)} alleles, the plan has {planned.end - planned.first}")
        unknown = set(statuses) - self.statuses
        if unknown:
            problems.append(f"part {path}: unknown status {sorted(unknown)}")
        if bad_status:
            problems.append(f"part {path}: {bad_status} row(s) whose status disagrees with their gene columns")
        return problems, (len(allele_keys), [(*k, *g) for k, g in zip(keys, genes)], not_scored, allele_keys)


# --- the kind -------------------------------------------------------------------------------------


class VariantsKind:
    """Variant effect scoring (``enformer-batch score-variants``)."""

    name = "variants"
    command = "score-variants"
    config = VariantConfig
    help = "score every ALT allele of a VCF: reference vs alternate predictions, per track (and per gene with --genes)"
    description = (
        "Centre the model's input on each variant (its first base at input position input_length/2), predict "
        "the reference and the alternate sequence (indels shift the right flank; bins are not re-aligned), and "
        "write one row per ALT allele to <out>/chrom=<name>/part-*.parquet: pos (1-based), id, ref, alt, status "
        "(ok, n_at_variant, ref_mismatch, symbolic, unknown_chrom), then float32 columns <score>:<track>. "
        "Scores: sad = sum over bins of (alt - ref); logsad = log2(sum alt + 1) - log2(sum ref + 1); "
        "l2 = sqrt(sum (alt - ref)^2); center = alt - ref at the middle output bin (the variant's). Alleles at "
        "one position share one reference prediction. With --genes: one row per allele and gene in range "
        "(gene_id, gene_name, gene_strand, tss_distance after status; status no_gene when none is), "
        "sed/logsed over the gene's exon bins and tss/logtss over its TSS bins, on the tracks of its strand "
        "and unstranded ones (docs/contract.md, Genes). Re-running the same command resumes."
    )
    validate_inputs = {
        "vcf": "variant tables: check that every row of this VCF (one per ALT) appears exactly once",
        "genes": "with --vcf, tables scored with --genes: the same gene models, to check each allele's rows against "
                 "exactly its genes in range",
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The options of ``enformer-batch score-variants`` (also used by ``jobs/variants.py``)."""
        parser.add_argument("vcf", help="VCF, VCF.gz (bgzip or gzip); path or fsspec URL")
        parser.add_argument("--fasta", required=True, help="reference FASTA the VCF's REF alleles refer to")
        add_model_arguments(parser)
        parser.add_argument("--scores", type=str_list, default=None,
                            help=f"comma-separated scores, from {','.join(SCORES)} and, with --genes, "
                            f"{','.join(GENE_SCORES)} (see the README); default sad, with --genes logsed")
        parser.add_argument("--genes", default=None, metavar="GTF",
                            help="gene models (GTF or GFF3, plain or gzip; path or fsspec URL): one row per allele "
                            "and gene in range, with gene scores")
        add_gene_arguments(parser, "with --genes: ")
        parser.add_argument("--strict", action="store_true",
                            help="fail (before computing anything) on a REF that does not match the FASTA, "
                            "instead of writing it with status ref_mismatch")
        parser.add_argument("--group-bp", type=int, default=0,
                            help="variants within this many bp share one reference window (fewer model inputs; "
                            "not exactly centred, see the README); 0 = off")

    def config_from_args(self, args: argparse.Namespace) -> VariantConfig:
        """The run that parsed ``score-variants`` arguments describe."""
        if args.genes is None and (args.gene_types is not None or args.tss_flank != DEFAULT_TSS_FLANK):
            raise ValueError("--tss-flank and --gene-types need --genes GTF")
        scores = args.scores or (DEFAULT_GENE_SCORES if args.genes else ("sad",))
        return VariantConfig(vcf=args.vcf, fasta=args.fasta, scores=scores, strict=args.strict,
                             group_bp=args.group_bp, genes=args.genes, tss_flank=args.tss_flank,
                             gene_types=args.gene_types, **run_options(args))

    def run(self, config: VariantConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
        return score_variants(config, on_part)

    def parts(self, identity: Mapping) -> list[VariantPart]:
        return plan_parts(identity)

    def schema(self, identity: Mapping) -> pa.Schema:
        return variant_schema(identity["scores"], [t["name"] for t in identity["tracks"]], "genes" in identity)

    def coverage(self, identity: Mapping, store: OutputStore) -> VariantCoverage:
        return VariantCoverage(identity, store)


KIND = VariantsKind()
