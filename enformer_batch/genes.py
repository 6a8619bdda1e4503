"""Gene expression from the reference genome (``predict-genes``): one window per gene, sums over its bins.

Owns what is particular to the kind (docs/contract.md, "Genes"): parts of consecutive genes of one chromosome
(in the annotation's order on it, by start), each gene's window centred on its first TSS in its own orientation
(+: the smallest, −: the largest), its exon and TSS bins in that window (``gene_scores``), the sums
``tss:<track> = Σ_{T_g} R`` and ``exon:<track> = Σ_{B_g} R`` reduced on the device, and the table: one row per
gene. Orchestration, commit, resume and validation are the engine's and validate's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .annotation import Annotation, ChromGenes, parse_gene_types, read_annotation
from .engine import JobPlan, RunError, RunOptions, RunSummary, model_identity, run_job
from .gene_scores import (
    DEFAULT_TSS_FLANK,
    check_tss_flank,
    exon_bins,
    exon_fraction,
    gene_expression,
    track_strands,
    tss_bins,
    window_origin,
)
from .genome import FastaSource, read_codes
from .settings import InferenceSettings, ModelInfo
from .store import PartRecord, codes_digest
from .windows import ENFORMER, Geometry

if TYPE_CHECKING:
    from .inference import Predictor

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
    genes: ChromGenes

    @property
    def name(self) -> str:
        return self.part_name(self.first, self.end)

    @staticmethod
    def part_name(first: int, end: int) -> str:
        return f"part-{first:09d}-{end:09d}.parquet"

    @property
    def units(self) -> int:
        return self.end - self.first


def gene_parts(annotation: Annotation, lengths: Mapping[str, int], per_part: int) -> Iterator[GenePart]:
    for chrom, genes in annotation.chroms.items():
        for first in range(0, len(genes), per_part):
            end = min(first + per_part, len(genes))
            yield GenePart(chrom, first, end, lengths[chrom], genes.subset(np.arange(first, end)))


def planned_gene_parts(genes_by_chrom: Mapping[str, int], per_part: int) -> Iterator[tuple[str, int, int]]:
    """``(chrom, first, end)`` of every part, from the per-chromosome gene counts (validate re-derives these)."""
    for chrom, n in genes_by_chrom.items():
        for first in range(0, n, per_part):
            yield chrom, first, min(first + per_part, n)


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


@dataclass
class GenesJob:
    """The driver's side of a ``predict-genes`` run (the engine's ``Job``)."""

    options: GenesConfig

    def __post_init__(self) -> None:
        self.fasta = FastaSource(self.options.fasta, dict(self.options.storage_options))
        self.mode = GeneMode(self.fasta, ENFORMER, self.options.tss_flank)

    def inference_settings(self) -> InferenceSettings:
        return self.options.inference_settings()

    def prepare(self) -> None:
        o = self.options
        self.lengths = self.fasta.lengths()
        self.annotation = read_annotation(o.genes, self.lengths, o.gene_types, o.storage_options)
        if not self.annotation.genes:
            raise ValueError(f"{o.genes}: no gene on a chromosome of {self.fasta.name}"
                             + (" with the --gene-types given" if o.gene_types else ""))

    def plan(self, info: ModelInfo) -> JobPlan:
        o, annotation = self.options, self.annotation
        self.mode = GeneMode(self.fasta, info.geometry, o.tss_flank)
        genes_by_chrom = {chrom: len(genes) for chrom, genes in annotation.chroms.items()}
        identity = {
            **model_identity(o, info),
            "mode": "genes",
            "fasta": {"name": self.fasta.name, "chromosomes": dict(self.lengths)},
            "genes": {"name": annotation.name, "sha256": annotation.sha256, "format": annotation.format,
                      "gene_types": list(o.gene_types) if o.gene_types is not None else None,
                      "tss_flank": o.tss_flank, "genes_by_chrom": genes_by_chrom,
                      "track_strands": list(info.track_strands or track_strands(info.track_names))},
            "genes_per_part": o.genes_per_part,
        }
        n_parts = sum(1 for _ in planned_gene_parts(genes_by_chrom, o.genes_per_part))
        return JobPlan(identity=identity, totals={"parts": n_parts, "units": annotation.genes},
                       parts=gene_parts(annotation, self.lengths, o.genes_per_part),
                       notes=tuple(annotation.summary()))


def predict_genes(config: GenesConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Predict every gene's expression (or resume doing so); returns the run's summary.

    Raises ValueError (or a subclass) on bad input, StoreError when ``--out`` cannot be used as asked, and
    RunError when a part fails; committed parts are kept and re-running the same call resumes.
    """
    return run_job(GenesJob(config), on_part)
