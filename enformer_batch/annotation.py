"""Gene models from a GTF or GFF3 annotation, streamed once and kept as each gene's exons and TSSs.

Owns the input side of gene-level scoring (docs/contract.md, "Genes"): opening an annotation (GTF as GENCODE,
Ensembl or UCSC ship it, or GFF3; plain or gzip; a path or any fsspec URL), reading its ``exon`` lines, and
keeping per gene only what scoring needs: the union of its transcripts' exons and each transcript's TSS, in
0-based half-open coordinates, on the FASTA's chromosome names (matched as a VCF's are, ``vcf.ChromMatcher``).
A per-chromosome index (sorted arrays, ``numpy.searchsorted``) finds the genes near a window.

Streaming: the file passes through once, line by line; what stays is four numbers per exon line (transcript,
start, end; strand per transcript) and one small record per transcript and gene, then the merged exons. A
GENCODE GTF (about 1.6 million exon lines, 1.5 GB uncompressed) peaks near the measured figure in README.md
("Genes"), far below the file.

Why our own reader rather than a library: gtfparse and pyranges load every line and attribute into a data
frame (gigabytes for GENCODE), gffutils first builds a SQLite database of every feature (minutes, and disk),
and HTSeq's reader parses every attribute of every line into dictionaries, opens only local files and names
no line in its errors. Scoring needs the exon lines and four attributes, from any fsspec URL, with the line
named in every error, so the format's few rules are checked here, strictly.

Gene identity: a gene is ``(chromosome, gene_id, strand)``. GENCODE's pseudo-autosomal genes share their ids
on X and Y and are two genes here, one per chromosome; a RefSeq gene symbol found on both strands of one
chromosome likewise becomes two genes, told apart by ``gene_strand``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

import numpy as np

from .genome import url_file_name
from .vcf import ChromMatcher

FORMATS = ("gtf", "gff3")
# GFF3 features that never parent a transcript: not kept while streaming (GENCODE has ~800,000 CDS lines).
_GFF3_LEAVES = frozenset({
    "exon", "CDS", "five_prime_UTR", "three_prime_UTR", "UTR", "start_codon", "stop_codon", "intron",
    "stop_codon_redefined_as_selenocysteine", "Selenocysteine",
})
_TYPE_KEYS = ("gene_type", "gene_biotype", "biotype")
_STRANDS = {"+": 1, "-": -1}


class AnnotationError(ValueError):
    """An annotation that cannot be read; the message names the file and, for a bad line, its line number."""


@dataclass(frozen=True)
class Gene:
    """One gene's model on one chromosome: exons merged over its transcripts, TSSs of its transcripts.

    Coordinates are 0-based half-open on the FASTA's chromosome (a GTF's ``start..end`` is ``[start - 1, end)``).
    """

    chrom: str
    gene_id: str
    gene_name: str
    strand: str  # "+" or "-"
    gene_type: str | None
    exons: np.ndarray  # int64 [k, 2]: disjoint, sorted [start, end) ranges, the union over transcripts
    tss: np.ndarray  # int64 [m]: distinct, sorted; + transcripts: smallest exon start, −: largest exon end − 1

    @property
    def start(self) -> int:
        return int(self.exons[0, 0])

    @property
    def end(self) -> int:
        return int(self.exons[-1, 1])

    @property
    def first_tss(self) -> int:
        """The gene's first TSS in its own orientation: the smallest on +, the largest on −."""
        return int(self.tss[0] if self.strand == "+" else self.tss[-1])

    def tss_distance(self, p: int) -> int:
        """``p`` minus the nearest TSS, negated for − genes (positive: downstream in the gene's orientation).

        Two TSSs equally near (one each side of ``p``): the one at the lower coordinate counts.
        """
        d = p - self.tss
        nearest = int(d[np.argmin(np.abs(d))])  # argmin takes the first minimum: tss is sorted ascending
        return nearest if self.strand == "+" else -nearest

    def exon_bases(self) -> int:
        return int((self.exons[:, 1] - self.exons[:, 0]).sum())


@dataclass
class ChromGenes:
    """The genes of one chromosome in compact arrays, ordered by start, with an index for range queries."""

    chrom: str
    gene_ids: list[str]
    gene_names: list[str]
    gene_types: list[str | None]
    strands: np.ndarray  # int8 [n]: +1 / −1
    exon_start: np.ndarray  # int64, every gene's merged exons concatenated
    exon_end: np.ndarray
    exon_offsets: np.ndarray  # int64 [n + 1]
    tss: np.ndarray  # int64, concatenated
    tss_offsets: np.ndarray  # int64 [n + 1]
    starts: np.ndarray = field(init=False)  # int64 [n]: first exon base, ascending
    ends: np.ndarray = field(init=False)  # int64 [n]: end of the last exon
    _reach: np.ndarray = field(init=False, repr=False)  # running maximum of ends: searchable

    def __post_init__(self) -> None:
        n = len(self.gene_ids)
        self.starts = self.exon_start[self.exon_offsets[:-1]] if n else np.zeros(0, np.int64)
        self.ends = np.maximum.reduceat(self.exon_end, self.exon_offsets[:-1]) if n else np.zeros(0, np.int64)
        if n and np.any(np.diff(self.starts) < 0):
            raise ValueError("ChromGenes: genes must be ordered by start")
        self._reach = np.maximum.accumulate(self.ends) if n else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.gene_ids)

    @classmethod
    def empty(cls, chrom: str) -> ChromGenes:
        """A chromosome without genes."""
        return _empty(chrom)

    def gene(self, i: int) -> Gene:
        a, b = self.exon_offsets[i], self.exon_offsets[i + 1]
        s, e = self.tss_offsets[i], self.tss_offsets[i + 1]
        return Gene(self.chrom, self.gene_ids[i], self.gene_names[i], "+" if self.strands[i] > 0 else "-",
                    self.gene_types[i], np.stack([self.exon_start[a:b], self.exon_end[a:b]], axis=1),
                    self.tss[s:e])

    def __iter__(self):
        return (self.gene(i) for i in range(len(self)))

    def subset(self, indices: np.ndarray) -> ChromGenes:
        """The genes at ``indices`` (ascending), as a table of their own: what a part of work ships."""
        idx = np.asarray(indices, np.int64)
        exon_take = _ranges(self.exon_offsets, idx)
        tss_take = _ranges(self.tss_offsets, idx)
        return ChromGenes(
            self.chrom, [self.gene_ids[i] for i in idx], [self.gene_names[i] for i in idx],
            [self.gene_types[i] for i in idx], self.strands[idx], self.exon_start[exon_take], self.exon_end[exon_take],
            _offsets(self.exon_offsets, idx), self.tss[tss_take], _offsets(self.tss_offsets, idx))

    def overlapping(self, lo: int, hi: int) -> np.ndarray:
        """Indices (ascending start) of the genes whose span ``[start, end)`` meets ``[lo, hi)``.

        Genes ending by ``lo`` are skipped through the running maximum of ends (a bisection); genes starting at or
        after ``hi`` through the sorted starts: the cost is the genes near the range, not the chromosome's.
        """
        first = int(np.searchsorted(self._reach, lo, side="right"))
        last = int(np.searchsorted(self.starts, hi, side="left"))
        if first >= last:
            return np.zeros(0, np.int64)
        candidates = np.arange(first, last)
        return candidates[self.ends[first:last] > lo]


@dataclass
class Annotation:
    """An annotation's genes per FASTA chromosome, and what the pass over the file saw."""

    name: str  # the file's base name
    sha256: str  # of the file's bytes as read (after decompression): the run identity's handle on it
    format: str  # "gtf" or "gff3"
    chroms: dict[str, ChromGenes]  # FASTA chromosome name -> its genes (only chromosomes with genes)
    lines: int = 0
    exon_lines: int = 0
    unknown: dict[str, int] = field(default_factory=dict)  # annotation chromosome -> genes the FASTA lacks
    renamed: dict[str, str] = field(default_factory=dict)  # annotation chromosome -> FASTA name, via 'chr'
    filtered: int = 0  # genes left out by --gene-types

    @property
    def genes(self) -> int:
        return sum(len(c) for c in self.chroms.values())

    def on(self, chrom: str) -> ChromGenes:
        """The genes of a FASTA chromosome (none: an empty table)."""
        found = self.chroms.get(chrom)
        return found if found is not None else _empty(chrom)

    def __iter__(self):
        for genes in self.chroms.values():
            yield from genes

    def require_genes(self, genome: str) -> None:
        """Refuse, in one line, an annotation that leaves nothing to score on ``genome``: a run would spend all its
        model time and write no gene (NCBI ``NC_0000xx`` names against a UCSC FASTA, a --gene-types typo)."""
        if self.genes:
            return
        why = []
        if self.unknown:
            names = ", ".join(list(self.unknown)[:3]) + (" ..." if len(self.unknown) > 3 else "")
            why.append(f"{sum(self.unknown.values())} genes are on chromosomes {genome} lacks ({names})")
        if self.filtered:
            why.append(f"--gene-types left out {self.filtered} genes")
        raise ValueError(f"{self.name}: no gene on a chromosome of {genome}" + (f": {'; '.join(why)}" if why else ""))

    def summary(self) -> list[str]:
        """One-line notes for a run's summary: genes kept, matched names, chromosomes the FASTA lacks."""
        notes = [f"annotation {self.name}: {self.genes} genes on {len(self.chroms)} chromosome(s) from "
                 f"{self.exon_lines} exon lines" + (f"; {self.filtered} genes left out by --gene-types"
                                                    if self.filtered else "")]
        if self.renamed:
            pairs = ", ".join(f"{a}→{b}" for a, b in list(self.renamed.items())[:5])
            notes.append(f"annotation chromosome names matched through a 'chr' prefix: {pairs}"
                         + (" ..." if len(self.renamed) > 5 else ""))
        if self.unknown:
            counts = ", ".join(f"{c} ({n})" for c, n in list(self.unknown.items())[:5])
            notes.append(f"{sum(self.unknown.values())} genes on chromosomes the FASTA lacks, not scored: {counts}"
                         + (" ..." if len(self.unknown) > 5 else ""))
        return notes


def _offsets(offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.zeros(len(idx) + 1, np.int64)
    np.cumsum(offsets[idx + 1] - offsets[idx], out=out[1:])
    return out


def _ranges(offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(offsets[i], offsets[i + 1])`` for each ``i`` in ``idx``."""
    if not len(idx):
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx])


def _empty(chrom: str) -> ChromGenes:
    z = np.zeros(0, np.int64)
    return ChromGenes(chrom, [], [], [], np.zeros(0, np.int8), z, z, np.zeros(1, np.int64), z, np.zeros(1, np.int64))


# --- reading ------------------------------------------------------------------------------------------


def _open_binary(url: str, storage_options: Mapping[str, str] | None) -> io.BufferedIOBase:
    import fsspec

    try:
        # Through the filesystem, not fsspec.open(...).open(): that one's OpenFile closes a chain's outer file
        # (zip://a.gtf::archive.zip) as soon as it is dropped.
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        handle = fs.open(path, "rb")
    except FileNotFoundError:
        raise AnnotationError(f"annotation not found: {url}") from None
    except (OSError, ValueError) as e:
        raise AnnotationError(f"cannot read annotation {url}: {e}") from e
    head = handle.read(2)
    handle.seek(0)
    if head == b"\x1f\x8b":  # gzip or bgzip (a series of gzip members, read as one stream)
        return gzip.GzipFile(fileobj=handle, mode="rb")
    return handle


def _format_from_name(url: str) -> str | None:
    name = url_file_name(url).lower()
    for ending in (".gz", ".bgz"):
        name = name.removesuffix(ending)
    if name.endswith(".gtf"):
        return "gtf"
    if name.endswith((".gff3", ".gff")):
        return "gff3"
    return None


class _Builder:
    """What the stream keeps: per exon line its transcript, start and end; per transcript its strand, chromosome
    and gene (GTF: known at once; GFF3: its Parent, resolved at the end through the kept parent links)."""

    def __init__(self) -> None:
        self.tx_index: dict[str, dict[str, int]] = {}  # annotation chromosome -> transcript id -> index
        self.tx_chrom: list[str] = []
        self.tx_strand = array("b")
        self.tx_gene = array("l")  # GTF: gene index; GFF3: -1 until resolved
        self.tx_id: list[str] = []  # GFF3 only: the Parent id, to resolve
        self.tx_line = array("l")  # first exon line of the transcript, for errors found at the end
        self.ex_tx = array("l")
        self.ex_start = array("q")
        self.ex_end = array("q")
        self.gene_index: dict[tuple[str, str, int], int] = {}
        self.gene_key: list[tuple[str, str, int]] = []  # (annotation chromosome, gene_id, strand)
        self.gene_name: list[str] = []
        self.gene_type: list[str | None] = []
        self.skipped: set[tuple[str, str, int]] = set()  # genes left out by --gene-types
        # Only genes with one of these gene_ids or gene_names are kept (None: all); the others are dropped as
        # they are met, so reading a whole GENCODE for one gene keeps one gene's exons.
        self.names: frozenset[str] | None = None
        self.unnamed: set[tuple[str, str, int]] = set()  # genes left out by ``names``
        self.typed = False  # some gene carries a type (gene_type, gene_biotype, biotype)

    def gene(self, chrom: str, gene_id: str, strand: int, name: str, gene_type: str | None) -> int:
        key = (chrom, gene_id, strand)
        g = self.gene_index.get(key)
        if g is None:
            g = self.gene_index[key] = len(self.gene_key)
            self.gene_key.append(key)
            self.gene_name.append(name)
            self.gene_type.append(gene_type)
        return g

    def transcript(self, chrom: str, tid: str, strand: int, gene: int, line: int, where: str) -> int:
        per_chrom = self.tx_index.setdefault(chrom, {})
        t = per_chrom.get(tid)
        if t is None:
            t = per_chrom[tid] = len(self.tx_chrom)
            self.tx_chrom.append(chrom)
            self.tx_strand.append(strand)
            self.tx_gene.append(gene)
            self.tx_id.append(tid)
            self.tx_line.append(line)
            return t
        if self.tx_strand[t] != strand:
            raise AnnotationError(f"{where}: transcript {tid} has exons on both strands (its first exon is on "
                                  f"line {self.tx_line[t]})")
        if gene >= 0 and self.tx_gene[t] != gene:
            raise AnnotationError(f"{where}: transcript {tid} is given gene_id {self.gene_key[gene][1]!r}, but "
                                  f"{self.gene_key[self.tx_gene[t]][1]!r} on line {self.tx_line[t]}")
        return t

    def exon(self, t: int, start: int, end: int) -> None:
        self.ex_tx.append(t)
        self.ex_start.append(start)
        self.ex_end.append(end)


def _fields(line: str, where: str) -> list[str]:
    fields = line.split("\t")
    if len(fields) != 9:
        raise AnnotationError(f"{where}: expected 9 tab-separated fields (seqname source feature start end score "
                              f"strand frame attributes); got {len(fields)}")
    return fields


def _exon_coords(fields: list[str], where: str) -> tuple[str, int, int, int]:
    chrom, start_text, end_text, strand_text = fields[0], fields[3], fields[4], fields[6]
    if not chrom:
        raise AnnotationError(f"{where}: empty seqname")
    try:
        start, end = int(start_text), int(end_text)
    except ValueError:
        raise AnnotationError(f"{where}: start and end must be integers, got {start_text!r} and {end_text!r}") \
            from None
    if start < 1 or end < start:
        raise AnnotationError(f"{where}: exon start..end must satisfy 1 <= start <= end (1-based, inclusive); "
                              f"got {start}..{end}")
    strand = _STRANDS.get(strand_text)
    if strand is None:
        raise AnnotationError(f"{where}: an exon's strand must be + or -, got {strand_text!r}")
    return chrom, start - 1, end, strand


def _gtf_value(attrs: str, key: str) -> str | None:
    """The value of ``key`` in GTF attributes (``key "value";`` or ``key value;``), or None.

    A plain search, not a regular expression over every attribute: GENCODE lines carry twenty attributes and a
    reader sees 1.6 million of them. ``key`` must open an attribute, so ``gene_id`` does not match
    ``havana_gene_id``.
    """
    probe = key + " "
    i = attrs.find(probe)
    while i > 0 and attrs[i - 1] not in " ;\t":
        i = attrs.find(probe, i + 1)
    if i < 0:
        return None
    j = i + len(probe)
    while j < len(attrs) and attrs[j] == " ":
        j += 1
    if attrs.startswith('"', j):
        end = attrs.find('"', j + 1)
        return attrs[j + 1 : end] if end >= 0 else None
    end = attrs.find(";", j)
    return attrs[j : end if end >= 0 else len(attrs)].strip()


def _gtf_exon(b: _Builder, fields: list[str], url: str, number: int, types: frozenset[str] | None) -> None:
    """One GTF exon line into the builder. The common case (a well-formed exon of a transcript already seen)
    takes no function call beyond the attribute look-ups: a GENCODE GTF has 1.6 million of them."""
    chrom, strand = fields[0], _STRANDS.get(fields[6])
    try:
        start, end = int(fields[3]) - 1, int(fields[4])
    except ValueError:
        start = end = -1
    if start < 0 or end <= start or strand is None or not chrom:
        _exon_coords(fields, f"{url} line {number}")  # raises, saying what is wrong
    attrs = fields[8]
    gene_id, tid = _gtf_value(attrs, "gene_id"), _gtf_value(attrs, "transcript_id")
    if not gene_id or not tid:
        raise AnnotationError(f"{url} line {number}: an exon line needs gene_id and transcript_id attributes "
                              f"(as 'gene_id \"...\"; transcript_id \"...\";')")
    key = (chrom, gene_id, strand)
    g = b.gene_index.get(key)
    if g is None:  # a new gene: its name and type, once
        if key in b.skipped or key in b.unnamed:
            return
        gene_type = _gtf_value(attrs, "gene_type") or _gtf_value(attrs, "gene_biotype")
        b.typed = b.typed or gene_type is not None
        if types is not None and gene_type not in types:
            b.skipped.add(key)
            return
        name = _gtf_value(attrs, "gene_name") or gene_id
        if b.names is not None and not named(b.names, gene_id, name):
            b.unnamed.add(key)
            return
        g = b.gene(chrom, gene_id, strand, name, gene_type)
    per_chrom = b.tx_index.get(chrom)
    t = per_chrom.get(tid) if per_chrom is not None else None
    if t is None or b.tx_strand[t] != strand or b.tx_gene[t] != g:
        t = b.transcript(chrom, tid, strand, g, number, f"{url} line {number}")
    b.ex_tx.append(t)
    b.ex_start.append(start)
    b.ex_end.append(end)


def _gff3_attributes(text: str, where: str) -> dict[str, str]:
    out = {}
    for item in text.strip().split(";"):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise AnnotationError(f"{where}: GFF3 attributes are 'key=value' pairs separated by ';'; got {item!r}"
                                  " (is this a GTF? name it .gtf)")
        out[key.strip()] = value.strip()
    return out


@dataclass
class _Feature:
    """A GFF3 feature that may parent a transcript: enough to find and name its gene."""

    parent: str | None
    gene_id: str | None
    name: str | None
    gene_type: str | None
    line: int


def unversioned(gene_id: str) -> str:
    """``ENSG00000139618.17`` → ``ENSG00000139618``: users name genes without the version as often as with it."""
    return gene_id.rsplit(".", 1)[0] if "." in gene_id else gene_id


def named(names: frozenset[str], gene_id: str, gene_name: str) -> bool:
    """Whether a gene answers to one of ``names``: its gene_id (with or without the version) or its gene_name."""
    return gene_id in names or gene_name in names or unversioned(gene_id) in names


def read_annotation(
    url: str,
    lengths: Mapping[str, int] | None = None,
    gene_types: Iterable[str] | None = None,
    storage_options: Mapping[str, str] | None = None,
    format: str | None = None,
    gene_names: Iterable[str] | None = None,
) -> Annotation:
    """Stream ``url`` once and return its genes on the FASTA's chromosomes (``lengths``; None keeps every name).

    ``format``: ``gtf`` or ``gff3``; by default from the name (``.gtf``, ``.gff3``/``.gff``, before ``.gz``),
    else from a ``##gff-version 3`` line, else GTF. ``gene_types`` keeps only genes whose ``gene_type`` /
    ``gene_biotype`` (GFF3 also ``biotype``) is listed; ``gene_names`` only genes whose gene_id or name is
    listed (every line is still read, checked and hashed). Raises AnnotationError naming the line for a
    malformed line, and for an annotation without exons.
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"annotation format must be one of {', '.join(FORMATS)}, got {format!r}")
    types = frozenset(gene_types) if gene_types is not None else None
    if types is not None and not types:
        raise ValueError("--gene-types needs at least one type (e.g. protein_coding,lncRNA)")
    fmt = format or _format_from_name(url)
    b = _Builder()
    b.names = frozenset(gene_names) if gene_names is not None else None
    features: dict[str, _Feature] = {}  # GFF3: id -> feature that may parent a transcript
    sha = hashlib.sha256()
    number = exon_lines = 0
    try:
        with _open_binary(url, storage_options) as handle:
            for number, raw in enumerate(handle, 1):
                sha.update(raw)
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line or line[0] == "#" or line.startswith(("track ", "browser ")):
                    if fmt is None and line.startswith("##gff-version"):
                        fmt = "gff3" if line.split()[1:2] and line.split()[1].startswith("3") else "gtf"
                    if line.startswith("##FASTA"):  # GFF3: sequences follow, no more features
                        while chunk := handle.read(1 << 20):
                            sha.update(chunk)
                        break
                    continue
                fmt = fmt or "gtf"
                fields = line.split("\t")
                if len(fields) != 9:
                    _fields(line, f"{url} line {number}")  # raises, saying what is wrong
                if fmt == "gtf":
                    if fields[2] == "exon":
                        exon_lines += 1
                        _gtf_exon(b, fields, url, number, types)
                    continue
                where = f"{url} line {number}"
                # GFF3: exons point to transcripts; other features are kept only as possible ancestors.
                feature = fields[2]
                if feature == "exon":
                    exon_lines += 1
                    chrom, start, end, strand = _exon_coords(fields, where)
                    parents = _gff3_attributes(fields[8], where).get("Parent")
                    if not parents:
                        raise AnnotationError(f"{where}: a GFF3 exon needs a Parent attribute (its transcript)")
                    for parent in parents.split(","):
                        b.exon(b.transcript(chrom, unquote(parent), strand, -1, number, where), start, end)
                elif feature not in _GFF3_LEAVES:
                    attrs = _gff3_attributes(fields[8], where)
                    fid = attrs.get("ID")
                    if fid is not None:
                        parent = attrs.get("Parent")
                        gene_type = next((attrs[k] for k in _TYPE_KEYS if k in attrs), None)
                        features[unquote(fid)] = _Feature(
                            unquote(parent.split(",")[0]) if parent else None,
                            unquote(attrs["gene_id"]) if "gene_id" in attrs else None,
                            unquote(attrs.get("gene_name") or attrs.get("Name") or "") or None,
                            unquote(gene_type) if gene_type else None, number)
    except AnnotationError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise AnnotationError(f"{url}: compressed data is truncated or corrupt after line {number} ({e})") from None
    except OSError as e:
        raise AnnotationError(f"cannot read annotation {url}: {e}") from e
    fmt = fmt or "gtf"
    if exon_lines == 0:
        raise AnnotationError(f"{url}: no exon lines in {number} line(s): not a GTF/GFF3 gene annotation")
    if fmt == "gff3":
        _resolve_gff3(url, b, features, types)
    if types is not None and not b.typed:
        raise AnnotationError(f"{url}: no gene carries gene_type, gene_biotype or biotype, so --gene-types "
                              "cannot select genes in it")
    annotation = _assemble(url, b, lengths, fmt, sha.hexdigest(), number, exon_lines)
    annotation.filtered = len(b.skipped)
    return annotation


def _resolve_gff3(url: str, b: _Builder, features: dict[str, _Feature], types: frozenset[str] | None) -> None:
    """Give each transcript its gene: the root of its Parent chain (itself when it has no parent); a gene that
    ``types`` leaves out gives its transcripts none (-1)."""
    for t, tid in enumerate(b.tx_id):
        where = f"{url} line {b.tx_line[t]}"
        node = features.get(tid)
        if node is None:
            raise AnnotationError(f"{where}: the exon's Parent {tid!r} is not the ID of any feature in the file")
        root_id, hops = tid, 0
        while node.parent is not None:
            parent = features.get(node.parent)
            if parent is None:
                raise AnnotationError(f"{url} line {node.line}: Parent {node.parent!r} is not the ID of any feature")
            root_id, node, hops = node.parent, parent, hops + 1
            if hops > 100:
                raise AnnotationError(f"{url} line {node.line}: the Parent links from {tid!r} form a cycle")
        chrom, strand = b.tx_chrom[t], b.tx_strand[t]
        gene_id = node.gene_id or root_id
        b.typed = b.typed or node.gene_type is not None
        if types is not None and node.gene_type not in types:
            b.skipped.add((chrom, gene_id, strand))
            continue
        if b.names is not None and not named(b.names, gene_id, node.name or gene_id):
            continue  # its transcript keeps no gene: its exons are dropped with the left-out genes'
        b.tx_gene[t] = b.gene(chrom, gene_id, strand, node.name or gene_id, node.gene_type)


def _assemble(url: str, b: _Builder, lengths: Mapping[str, int] | None, fmt: str, sha256: str, lines: int,
              exon_lines: int) -> Annotation:
    """Exons → per-gene union and TSSs, grouped per FASTA chromosome and ordered by start."""
    tx_gene = np.asarray(b.tx_gene, dtype=np.int64)
    ex_tx = np.asarray(b.ex_tx, dtype=np.int64)
    ex_start = np.asarray(b.ex_start, dtype=np.int64)
    ex_end = np.asarray(b.ex_end, dtype=np.int64)
    tx_strand = np.asarray(b.tx_strand, dtype=np.int8)
    n_genes, n_tx = len(b.gene_key), len(b.tx_chrom)
    # TSS per transcript: + the smallest exon start, − the largest exon end − 1.
    tx_min = np.full(n_tx, np.iinfo(np.int64).max)
    tx_max = np.full(n_tx, -1, np.int64)
    np.minimum.at(tx_min, ex_tx, ex_start)
    np.maximum.at(tx_max, ex_tx, ex_end)
    tx_tss = np.where(tx_strand > 0, tx_min, tx_max - 1)
    ex_gene = tx_gene[ex_tx] if len(ex_tx) else np.zeros(0, np.int64)
    keep = ex_gene >= 0
    ex_gene, ex_start, ex_end = ex_gene[keep], ex_start[keep], ex_end[keep]
    del ex_tx, keep
    # Union of each gene's exons: sort by (gene, start); a range opens where the gene changes or the start lies
    # beyond every end seen so far in the gene (ends offset by gene so one running maximum serves all genes).
    order = np.lexsort((ex_start, ex_gene))
    g, s, e = ex_gene[order], ex_start[order], ex_end[order]
    del order
    span = np.int64(1) << np.int64(40)  # beyond any chromosome position
    reach = np.maximum.accumulate(e + g * span) - g * span if len(g) else e
    opens = np.ones(len(g), bool)
    if len(g):
        opens[1:] = (g[1:] != g[:-1]) | (s[1:] > reach[:-1])
    first = np.flatnonzero(opens)
    merged_gene, merged_start = g[first], s[first]
    merged_end = np.maximum.reduceat(e, first) if len(first) else e[:0]
    # Exons are merged ranges after this; the running maximum is exact because each range's end is the
    # maximum over its members, which reduceat takes.
    del g, s, e, reach, opens
    gene_exon_off = np.searchsorted(merged_gene, np.arange(n_genes + 1))
    live_tx = tx_gene >= 0
    tss_gene, tss_pos = tx_gene[live_tx], tx_tss[live_tx]
    order = np.lexsort((tss_pos, tss_gene))
    tss_gene, tss_pos = tss_gene[order], tss_pos[order]
    distinct = np.ones(len(tss_pos), bool)
    if len(tss_pos):
        distinct[1:] = (tss_gene[1:] != tss_gene[:-1]) | (tss_pos[1:] != tss_pos[:-1])
    tss_gene, tss_pos = tss_gene[distinct], tss_pos[distinct]
    gene_tss_off = np.searchsorted(tss_gene, np.arange(n_genes + 1))

    match = ChromMatcher(lengths) if lengths is not None else None
    by_chrom: dict[str, list[int]] = {}
    unknown: dict[str, int] = {}
    for gi, (chrom, _, _) in enumerate(b.gene_key):
        if gene_exon_off[gi] == gene_exon_off[gi + 1]:
            continue  # every transcript of the gene left out (GFF3 --gene-types)
        target = chrom if match is None else match(chrom)
        if target is None:
            unknown[chrom] = unknown.get(chrom, 0) + 1
            continue
        by_chrom.setdefault(target, []).append(gi)
    chroms = {}
    for chrom, members in by_chrom.items():
        idx = np.asarray(members, np.int64)
        idx = idx[np.lexsort((idx, merged_start[gene_exon_off[idx]]))]  # by start; ties in file order
        chroms[chrom] = _gather(chrom, b, idx, merged_start, merged_end, gene_exon_off, tss_pos, gene_tss_off)
    if lengths is not None:  # the FASTA's order
        rank = {name: i for i, name in enumerate(lengths)}
        chroms = dict(sorted(chroms.items(), key=lambda kv: rank[kv[0]]))
    return Annotation(
        name=url_file_name(url), sha256=sha256, format=fmt, chroms=chroms,
        lines=lines, exon_lines=exon_lines, unknown=unknown, renamed=dict(match.renamed) if match else {},
    )


def _gather(chrom: str, b: _Builder, idx: np.ndarray, starts: np.ndarray, ends: np.ndarray, exon_off: np.ndarray,
            tss: np.ndarray, tss_off: np.ndarray) -> ChromGenes:
    exon_take, tss_take = _ranges(exon_off, idx), _ranges(tss_off, idx)
    return ChromGenes(
        chrom=chrom,
        gene_ids=[b.gene_key[i][1] for i in idx],
        gene_names=[b.gene_name[i] for i in idx],
        gene_types=[b.gene_type[i] for i in idx],
        strands=np.asarray([b.gene_key[i][2] for i in idx], np.int8),
        exon_start=starts[exon_take], exon_end=ends[exon_take], exon_offsets=_offsets(exon_off, idx),
        tss=tss[tss_take], tss_offsets=_offsets(tss_off, idx),
    )


def parse_gene_types(spec: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``--gene-types protein_coding,lncRNA`` → a tuple (None: every gene)."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    types = tuple(t.strip() for t in items if t.strip())
    if not types:
        raise ValueError("--gene-types needs at least one type (e.g. protein_coding,lncRNA)")
    return types
