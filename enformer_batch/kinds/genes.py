"""The genes kind: gene expression from the reference genome (``predict-genes``), one window per gene.

Owns what is particular to the kind (docs/contract.md, "Genes"): parts of consecutive genes of one chromosome
(in the annotation's order on it, by start), planned from the per-chromosome gene counts and filled with the
genes from the annotation; each gene's window centred on its first TSS in its own orientation (+: the smallest,
−: the largest), its exon and TSS bins in that window (``gene_scores``), the sums ``tss:<track> = Σ_{T_g} R``
and ``exon:<track> = Σ_{B_g} R`` reduced on the device; the table, one row per gene; and the coverage
``validate`` runs (with ``--genes``: every gene of the annotation exactly once). Orchestration, commit and
resume are the engine's.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..annotation import Annotation, ChromGenes, parse_gene_types, read_annotation
from ..engine import RunError, RunOptions, RunSummary, run_job, stage
from ..gene_scores import (
    DEFAULT_TSS_FLANK,
    check_tss_flank,
    exon_bins,
    exon_fraction,
    gene_expression,
    track_strands,
    tss_bins,
    window_origin,
)
from ..genome import FastaSource, read_codes
from ..settings import ModelInfo
from ..store import OutputStore, PartRecord, codes_digest
from ..windows import Geometry
from .arguments import add_gene_arguments, add_model_arguments, run_options
from .base import FastaJob
from .scoring import RowCoverage, row_part_bounds

if TYPE_CHECKING:
    from ..inference import Predictor

DEFAULT_GENES_PER_PART = 64
GENE_TABLE_FIELDS = (
    pa.field("gene_id", pa.string(), nullable=False), pa.field("gene_name", pa.string(), nullable=False),
    pa.field("gene_strand", pa.string(), nullable=False), pa.field("tss", pa.int64(), nullable=False),
    pa.field("exon_fraction", pa.float32(), nullable=False),
)
SUMS = ("tss", "exon")  # column prefixes, in this order


def gene_table_schema(track_names: list[str] | tuple[str, ...]) -> pa.Schema:
    return pa.schema(list(GENE_TABLE_FIELDS) + [pa.field(f"{s}:{t}", pa.float32()) for s in SUMS for t in track_names])


@dataclass(frozen=True)
class GenesConfig(RunOptions):
    """One ``predict-genes`` run (see ``RunOptions`` for the model and replica settings)."""

    fasta: str
    genes: str
    gene_types: tuple[str, ...] | None = None
    tss_flank: int = DEFAULT_TSS_FLANK
    genes_per_part: int = DEFAULT_GENES_PER_PART

    def check(self) -> None:
        super().check()
        check_tss_flank(self.tss_flank)
        parse_gene_types(self.gene_types)
        if self.genes_per_part < 1:
            raise ValueError("genes_per_part must be at least 1")


@dataclass(frozen=True)
class GenePart:
    """Genes ``[first, end)`` of one chromosome, in the annotation's order on it (the engine's ``Part``)."""

    chrom: str
    first: int
    end: int
    length: int
    genes: ChromGenes | None = None  # filled from the annotation when the run computes the part

    @property
    def name(self) -> str:
        return f"part-{self.first:09d}-{self.end:09d}.parquet"

    @property
    def units(self) -> int:
        return self.end - self.first


def plan_parts(identity: Mapping) -> list[GenePart]:
    """The parts of a ``predict-genes`` run, from its identity (without their genes: the run fills them)."""
    lengths = identity["fasta"]["chromosomes"]
    genes = identity["genes"]
    return [GenePart(chrom, first, end, lengths[chrom])
            for chrom, first, end in row_part_bounds(genes["genes_by_chrom"], identity["genes_per_part"])]


def fill_parts(planned: Iterable[GenePart], annotation: Annotation) -> Iterator[GenePart]:
    for part in planned:
        yield dataclasses.replace(part, genes=annotation.on(part.chrom).subset(np.arange(part.first, part.end)))


@dataclass(frozen=True)
class GenesFilled:
    """The planned parts, each filled with its genes whenever iterated (a resume iterates the plan twice)."""

    parts: list[GenePart]
    annotation: Annotation

    def __iter__(self) -> Iterator[GenePart]:
        return fill_parts(self.parts, self.annotation)


def gene_parts(annotation: Annotation, lengths: Mapping[str, int], per_part: int) -> list[GenePart]:
    """Every part with its genes (for computing genes outside a run)."""
    planned = [GenePart(chrom, first, end, lengths[chrom]) for chrom, first, end in
               row_part_bounds({c: len(g) for c, g in annotation.chroms.items()}, per_part)]
    return list(fill_parts(planned, annotation))


@dataclass
class GeneInputs:
    windows: np.ndarray  # uint8 [genes, input_length]: each gene's window, centred on its first TSS
    exon_mask: np.ndarray  # bool [genes, bins]: the gene's own B_g in its window
    tss_mask: np.ndarray  # bool [genes, bins]
    centres: np.ndarray  # int64 [genes]: the first TSS (0-based), at input index input_length // 2
    exon_fraction: np.ndarray  # float32 [genes]


@dataclass(frozen=True)
class GeneResult:
    values: np.ndarray  # float32 [genes, 2, tracks]: Σ_{T_g} R, Σ_{B_g} R
    centres: np.ndarray
    exon_fraction: np.ndarray
    sequences: int


def gene_reader(fasta: str, storage_options: tuple, geometry: Geometry, tss_flank: int) -> GeneMode:
    """The kind's reader stage on a FASTA (``validate --fasta`` re-reads the bases under each part with it)."""
    return GeneMode(FastaSource(fasta, dict(storage_options)), geometry, tss_flank)


def read_gene_inputs(fasta_source: FastaSource, part: GenePart, geometry: Geometry, tss_flank: int) -> GeneInputs:
    half = geometry.input_length // 2
    s, n = geometry.bin_size, geometry.output_bins
    genes = list(part.genes)
    centres = np.asarray([g.first_tss for g in genes], np.int64)
    fasta = fasta_source.open()
    try:
        windows = np.stack([read_codes(fasta, part.chrom, part.length, c - half, c + half) for c in centres]) \
            if genes else np.zeros((0, geometry.input_length), np.uint8)
    finally:
        fasta.close()
    origins = [window_origin(int(c), geometry) for c in centres]
    exon = np.stack([exon_bins(g, o, s, n) for g, o in zip(genes, origins)]) if genes else np.zeros((0, n), bool)
    tss = np.stack([tss_bins(g, o, s, n, tss_flank) for g, o in zip(genes, origins)]) if genes \
        else np.zeros((0, n), bool)
    fraction = np.asarray([exon_fraction(g, o, o + geometry.output_span) for g, o in zip(genes, origins)],
                          np.float32)
    return GeneInputs(windows, exon, tss, centres, fraction)


@dataclass(frozen=True)
class GeneMode:
    """Genes in, one row of sums per gene out (the engine's ``Mode`` for ``predict-genes``)."""

    fasta: FastaSource
    geometry: Geometry
    tss_flank: int = DEFAULT_TSS_FLANK
    unit: str = "gene"

    def read(self, part: GenePart) -> GeneInputs:
        return read_gene_inputs(self.fasta, part, self.geometry, self.tss_flank)

    def infer(self, predictor: Predictor, part: GenePart, inputs: GeneInputs) -> GeneResult:
        import torch

        n, tracks = len(inputs.centres), len(predictor.info.track_indices)
        device = predictor.device
        out = torch.empty((n, 2, tracks), dtype=torch.float32, device=device)
        b = predictor.batch_size
        with torch.inference_mode():
            for i in range(0, n, b):
                x = torch.tensor(inputs.windows[i : i + b], device=device)
                y = predictor.predict_on_device(x)
                exon = torch.tensor(inputs.exon_mask[i : i + b], device=device)
                tss = torch.tensor(inputs.tss_mask[i : i + b], device=device)
                for k in range(y.shape[0]):  # each gene's own masks: [1, bins]
                    out[i + k] = gene_expression(y[k], exon[k : k + 1], tss[k : k + 1])[0]
        values = out.cpu().numpy()
        if not np.isfinite(values).all():
            bad = [part.genes.gene_ids[i] for i in np.flatnonzero(~np.isfinite(values).all(axis=(1, 2)))[:5]]
            raise RunError(f"{part.chrom}: the model returned NaN or infinity for gene(s) {bad}")
        return GeneResult(values, inputs.centres, inputs.exon_fraction, n)

    def table(self, part: GenePart, result: GeneResult, info: ModelInfo) -> pa.Table:
        genes = part.genes
        strands = info.track_strands or track_strands(info.track_names)
        track = np.asarray([1 if s == "+" else -1 if s == "-" else 0 for s in strands], np.int8)
        ok = (track[None, :] == 0) | (track[None, :] == genes.strands[:, None])  # [genes, tracks]
        schema = gene_table_schema(info.track_names)
        columns = [
            pa.array(genes.gene_ids, pa.string()), pa.array(genes.gene_names, pa.string()),
            pa.array(["+" if s > 0 else "-" for s in genes.strands], pa.string()),
            pa.array(result.centres, pa.int64()), pa.array(result.exon_fraction, pa.float32()),
        ]
        for k in range(len(SUMS)):
            for t in range(len(strands)):
                columns.append(pa.array(result.values[:, k, t], pa.float32(), mask=~ok[:, t]))
        return pa.Table.from_arrays(columns, schema=schema)

    def tally(self, result: GeneResult) -> tuple[int, dict]:
        return result.sequences, {}

    def digest(self, inputs: GeneInputs) -> str:
        return codes_digest(inputs.windows)


class GenesJob(FastaJob):
    """The driver's side of a ``predict-genes`` run."""

    options: GenesConfig
    annotation: Annotation | None = None

    def make_mode(self, geometry: Geometry) -> GeneMode:
        return GeneMode(self.fasta, geometry, self.options.tss_flank)

    def read_inputs(self) -> None:
        """Stream the annotation once (before Ray starts): every exon line checked, genes kept."""
        o = self.options
        stage(self.options, f"reading gene models from {self.options.genes} (streamed: every exon line is checked)")
        self.annotation = read_annotation(o.genes, self.lengths, o.gene_types, o.storage_options)
        self.annotation.require_genes(self.fasta.name)

    def identity_fields(self, info: ModelInfo, previous: Mapping | None) -> dict:
        o, annotation = self.options, self.annotation
        return {
            "mode": "genes",
            "genes": {"name": annotation.name, "sha256": annotation.sha256, "format": annotation.format,
                      "gene_types": list(o.gene_types) if o.gene_types is not None else None,
                      "tss_flank": o.tss_flank,
                      "genes_by_chrom": {chrom: len(genes) for chrom, genes in annotation.chroms.items()},
                      "track_strands": list(info.track_strands or track_strands(info.track_names))},
            "genes_per_part": o.genes_per_part,
        }

    def totals(self, identity: Mapping, parts: list[GenePart]) -> dict:
        return {"parts": len(parts), "units": self.annotation.genes}

    def feed(self, parts: list[GenePart]) -> GenesFilled:
        return GenesFilled(parts, self.annotation)

    def notes(self) -> tuple[str, ...]:
        return tuple(self.annotation.summary())


def predict_genes(config: GenesConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Predict every gene's expression (or resume doing so); returns the run's summary.

    Raises ValueError (or a subclass) on bad input, StoreError when ``--out`` cannot be used as asked, and
    RunError when a part fails; committed parts are kept and re-running the same call resumes.
    """
    return run_job(GenesJob(config, KIND), on_part)


# --- validation -----------------------------------------------------------------------------------


class GeneTableCoverage(RowCoverage):
    """``predict-genes`` tables: each part holds its planned genes; with ``--genes``, every gene of the annotation
    on the FASTA's chromosomes exactly once."""

    def __init__(self, identity: Mapping, store: OutputStore):
        super().__init__(identity, store, plan_parts(identity), KIND.schema(identity),
                         identity["genes"]["genes_by_chrom"], keys=("gene_id", "gene_strand"),
                         reader=functools.partial(gene_reader, geometry=Geometry(**identity["geometry"]),
                                                  tss_flank=int(identity["genes"]["tss_flank"])))
        self._read: tuple[str, Annotation] | None = None
        self.genes_read = False  # whether with_inputs filled the parts with their genes (their windows are known)

    def _annotation(self, url: str, storage_options) -> Annotation:
        """``--genes`` as the run read it (its gene types), streamed once for both checks that need it."""
        if self._read is None or self._read[0] != url:
            self._read = (url, read_annotation(url, self.identity["fasta"]["chromosomes"],
                                               self.identity["genes"]["gene_types"], storage_options))
        return self._read[1]

    def with_inputs(self, planned: Mapping, inputs: Mapping[str, str], storage_options) -> Mapping:
        """The parts with their genes from ``--genes`` (``--fasta`` then compares the bases under each gene's
        window); as planned without it."""
        url = inputs.get("genes")
        if url is None:
            return planned
        annotation = self._annotation(url, storage_options)
        if annotation.sha256 != self.identity["genes"]["sha256"]:
            return planned  # ``expected`` reports it
        self.genes_read = True
        return {path: next(fill_parts([part], annotation)) for path, part in planned.items()}

    def checks_codes(self, inputs: Mapping[str, str]) -> bool:
        return self.genes_read

    def wants_keys(self, inputs: Mapping[str, str]) -> bool:
        return "genes" in inputs

    def expected(self, inputs: Mapping[str, str], storage_options) -> Counter | None:
        url = inputs.get("genes")
        if url is None:
            return None
        annotation = self._annotation(url, storage_options)
        if annotation.sha256 != self.identity["genes"]["sha256"]:
            self.input_problems.append(f"{url} is not the annotation this table was predicted from (its content "
                                       "hash differs)")
        return Counter((g.chrom, g.gene_id, g.strand) for g in annotation)


# --- the kind -------------------------------------------------------------------------------------


class GenesKind:
    """Gene expression from the reference (``enformer-batch predict-genes``)."""

    name = "genes"
    command = "predict-genes"
    config = GenesConfig
    help = "gene expression from the reference: per gene, its TSS and exon sums in a window on its first TSS"
    description = (
        "One model input per gene of a GTF/GFF3, centred on its first TSS in its orientation (+: the smallest, "
        "-: the largest). Rows under <out>/chrom=<name>/: gene_id, gene_name, gene_strand, tss (0-based), "
        "exon_fraction (share of the gene's exonic bases inside the output), then tss:<track> (sum over the "
        "bins within --tss-flank of each TSS) and exon:<track> (sum over the bins its exons overlap); a "
        "stranded track of the other strand is null. Re-running the same command resumes."
    )
    validate_inputs: Mapping[str, str] = {
        "genes": "predict-genes tables: check that every gene of these gene models appears exactly once",
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("fasta", help="FASTA path or URL")
        parser.add_argument("genes", help="gene models: GTF or GFF3, plain or gzip; path or fsspec URL")
        add_model_arguments(parser)
        add_gene_arguments(parser)

    def config_from_args(self, args: argparse.Namespace) -> GenesConfig:
        return GenesConfig(fasta=args.fasta, genes=args.genes, gene_types=args.gene_types, tss_flank=args.tss_flank,
                           **run_options(args))

    def run(self, config: GenesConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
        return predict_genes(config, on_part)

    def parts(self, identity: Mapping) -> list[GenePart]:
        return plan_parts(identity)

    def schema(self, identity: Mapping) -> pa.Schema:
        return gene_table_schema([t["name"] for t in identity["tracks"]])

    def coverage(self, identity: Mapping, store: OutputStore) -> GeneTableCoverage:
        return GeneTableCoverage(identity, store)


KIND = GenesKind()
