"""Genes: reading gene models (GTF, GFF3), a window's exon and TSS bins, the strand rule and the gene scores,
each against an independent reading of docs/contract.md ("Genes") written here with plain Python and numpy;
real GRCh37 chr20 gene models checked against the genome's splice sites."""

from __future__ import annotations

import gzip
import os
import random
import re
import tracemalloc

import numpy as np
import pytest
import torch

from enformer_batch.annotation import AnnotationError, read_annotation
from enformer_batch.gene_scores import (
    GENE_SCORES,
    exon_fraction,
    gene_expression,
    gene_scores,
    gene_validity,
    track_strands,
    window_genes,
    window_origin,
)
from enformer_batch.windows import ENFORMER, Geometry

# A small geometry keeps the brute-force oracles quick: 64 output bins of 16 bp, 512 bp of context each side.
SMALL = Geometry(input_length=2048, bin_size=16, output_bins=64)

# Hand-built genes: gene_id -> (name or None, type, chrom, strand, {transcript: [(start, end) 1-based inclusive]}).
GENES = {
    "ENSG_A": ("ALPHA", "protein_coding", "chrT", "+", {
        "tA1": [(1001, 1100), (1201, 1300)],
        "tA2": [(1051, 1150), (1401, 1500)],
    }),
    "ENSG_B": ("BETA", "lncRNA", "chrT", "-", {
        "tB1": [(2001, 2050), (2101, 2300)],
        "tB2": [(2201, 2400)],
    }),
    "ENSG_C": (None, "protein_coding", "chrT", "+", {"tC1": [(9001, 9100)]}),
    "ENSG_E": ("EPS", "protein_coding", "chrT", "-", {
        "tE1": [(3001, 3100), (3101, 3200)],  # adjacent exons: one range in the union
        "tE2": [(3050, 3150)],
    }),
    "ENSG_Z": ("ZED", "protein_coding", "chrZ", "+", {"tZ1": [(100, 200)]}),  # the FASTA has no chrZ
}
# What the contract makes of them (0-based half-open), worked out by hand.
EXPECTED = {
    "ENSG_A": ([(1000, 1150), (1200, 1300), (1400, 1500)], [1000, 1050]),
    "ENSG_B": ([(2000, 2050), (2100, 2400)], [2299, 2399]),
    "ENSG_C": ([(9000, 9100)], [9000]),
    "ENSG_E": ([(3000, 3200)], [3149, 3199]),
}
LENGTHS = {"chrT": 10_000, "chrU": 5_000}


def gtf_text(genes: dict = GENES, noise: str = "") -> str:
    lines = ["##description: hand-built genes", "#!genome-build test"]
    for gid, (name, gtype, chrom, strand, transcripts) in genes.items():
        ids = f'gene_id "{gid}"; gene_type "{gtype}";' + (f' gene_name "{name}";' if name else "")
        lo = min(s for ex in transcripts.values() for s, _ in ex)
        hi = max(e for ex in transcripts.values() for _, e in ex)
        lines.append(f"{chrom}\ttest\tgene\t{lo}\t{hi}\t.\t{strand}\t.\t{ids}")
        for tid, exons in transcripts.items():
            lines.append(f'{chrom}\ttest\ttranscript\t{exons[0][0]}\t{exons[-1][1]}\t.\t{strand}\t.\t{ids} '
                         f'transcript_id "{tid}";')
            for n, (s, e) in enumerate(exons, 1):
                lines.append(f'{chrom}\ttest\texon\t{s}\t{e}\t.\t{strand}\t.\t{ids} transcript_id "{tid}"; '
                             f'exon_number {n}; level 2;{noise}')
                lines.append(f"{chrom}\ttest\tCDS\t{s}\t{e}\t.\t{strand}\t0\t{ids} transcript_id \"{tid}\";")
    return "\n".join(lines) + "\n"


def gff3_text(genes: dict = GENES) -> str:
    """The same genes as GFF3, Ensembl style (``gene:``/``transcript:`` ids), exons listed after their parents'
    siblings, and one exon shared by two transcripts through a comma-separated Parent."""
    lines = ["##gff-version 3"]
    for gid, (name, gtype, chrom, strand, transcripts) in genes.items():
        lo = min(s for ex in transcripts.values() for s, _ in ex)
        hi = max(e for ex in transcripts.values() for _, e in ex)
        name_attr = f";Name={name}" if name else ""
        lines.append(f"{chrom}\ttest\tgene\t{lo}\t{hi}\t.\t{strand}\t.\tID=gene:{gid}{name_attr};gene_id={gid};"
                     f"biotype={gtype}")
        exon_lines = []
        for tid, exons in transcripts.items():
            lines.append(f"{chrom}\ttest\tmRNA\t{exons[0][0]}\t{exons[-1][1]}\t.\t{strand}\t.\t"
                         f"ID=transcript:{tid};Parent=gene:{gid}")
            for s, e in exons:
                exon_lines.append((s, e, tid))
        shared = {}
        for s, e, tid in exon_lines:
            shared.setdefault((s, e), []).append(f"transcript:{tid}")
        for (s, e), parents in shared.items():
            lines.append(f"{chrom}\ttest\texon\t{s}\t{e}\t.\t{strand}\t.\tParent={','.join(parents)}")
            lines.append(f"{chrom}\ttest\tCDS\t{s}\t{e}\t.\t{strand}\t0\tID=cds:{s};Parent={parents[0]}")
    return "\n".join(lines) + "\n"


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return str(path)


def records(annotation) -> list[tuple]:
    return [(g.chrom, g.gene_id, g.gene_name, g.strand, g.gene_type, g.exons.tolist(), g.tss.tolist())
            for g in annotation]


# --- reading annotations ----------------------------------------------------------------------------------


def test_gtf_gene_records_are_the_contracts(tmp_path) -> None:
    annotation = read_annotation(write(tmp_path, "genes.gtf.gz", gtf_text()), LENGTHS)
    got = {g.gene_id: g for g in annotation}
    assert set(got) == set(EXPECTED)
    for gid, (exons, tss) in EXPECTED.items():
        g = got[gid]
        name, gtype, chrom, strand, _ = GENES[gid]
        assert (g.chrom, g.gene_name, g.gene_type, g.strand) == (chrom, name or gid, gtype, strand)
        assert g.exons.tolist() == [list(e) for e in exons]
        assert g.tss.tolist() == tss
    assert got["ENSG_A"].first_tss == 1000 and got["ENSG_B"].first_tss == 2399
    assert annotation.unknown == {"chrZ": 1}
    assert annotation.format == "gtf" and annotation.exon_lines == 12
    assert [g.gene_id for g in annotation.on("chrT")] == ["ENSG_A", "ENSG_B", "ENSG_E", "ENSG_C"]  # by start
    assert len(annotation.on("chrU")) == 0
    assert any("chrZ (1)" in note for note in annotation.summary())


def test_gff3_gives_the_same_genes_as_gtf(tmp_path) -> None:
    gtf = read_annotation(write(tmp_path, "genes.gtf", gtf_text()), LENGTHS)
    gff = read_annotation(write(tmp_path, "genes.gff3.gz", gff3_text()), LENGTHS)
    assert gff.format == "gff3"
    assert records(gff) == records(gtf)
    assert gff.unknown == gtf.unknown == {"chrZ": 1}
    # Found by content when the name says nothing.
    assert read_annotation(write(tmp_path, "genes.txt", gff3_text()), LENGTHS).format == "gff3"


def test_random_gene_models_against_a_direct_reading(tmp_path) -> None:
    """Many random multi-transcript genes: the union of exons and the TSSs from sets of positions."""
    rng = random.Random(7)
    genes = {}
    for k in range(60):
        strand = rng.choice("+-")
        transcripts = {}
        for t in range(rng.randint(1, 4)):
            start = rng.randint(1, 3000)
            exons = []
            for _ in range(rng.randint(1, 5)):
                end = start + rng.randint(0, 80)
                exons.append((start, end))
                start = end + rng.randint(1, 100)  # may touch the next exon when 1
            transcripts[f"t{k}_{t}"] = exons
        genes[f"G{k:03d}"] = (f"N{k}", "protein_coding", "chrT", strand, transcripts)
    annotation = read_annotation(write(tmp_path, "random.gtf", gtf_text(genes)), LENGTHS)
    got = {g.gene_id: g for g in annotation}
    for gid, (_, _, _, strand, transcripts) in genes.items():
        bases = {p for exons in transcripts.values() for s, e in exons for p in range(s - 1, e)}
        covered = set()
        for s, e in got[gid].exons.tolist():
            assert s < e and not covered & set(range(s, e))
            covered |= set(range(s, e))
        assert covered == bases
        ranges = got[gid].exons
        assert np.all(ranges[1:, 0] > ranges[:-1, 1])  # disjoint and not touching
        tss = {min(s for s, _ in ex) - 1 if strand == "+" else max(e for _, e in ex) - 1
               for ex in transcripts.values()}
        assert got[gid].tss.tolist() == sorted(tss)
    gff = read_annotation(write(tmp_path, "random.gff3", gff3_text(genes)), LENGTHS)
    assert records(gff) == records(annotation)


def test_gene_identity_chrom_prefix_and_types(tmp_path) -> None:
    genes = {
        # The same id on two chromosomes (GENCODE's pseudo-autosomal genes): two genes, one on each.
        "PAR1": ("P", "protein_coding", "T", "+", {"p1": [(10, 20)]}),
        "PAR1b": ("P", "protein_coding", "U", "+", {"p2": [(30, 40)]}),
        "SNO": ("S", "snoRNA", "T", "-", {"s1": [(500, 600)]}),
    }
    text = gtf_text(genes).replace('"PAR1b"', '"PAR1"')
    annotation = read_annotation(write(tmp_path, "par.gtf", text), LENGTHS)
    assert [(g.chrom, g.gene_id) for g in annotation] == [("chrT", "PAR1"), ("chrT", "SNO"), ("chrU", "PAR1")]
    assert annotation.renamed == {"T": "chrT", "U": "chrU"}
    kept = read_annotation(write(tmp_path, "par2.gtf", text), LENGTHS, gene_types=["protein_coding"])
    assert [g.gene_id for g in kept] == ["PAR1", "PAR1"] and kept.filtered == 1
    gff = read_annotation(write(tmp_path, "genes.gff3", gff3_text()), LENGTHS, gene_types=["lncRNA"])
    assert [g.gene_id for g in gff] == ["ENSG_B"] and gff.filtered == 4
    untyped = gtf_text().replace("gene_type", "kind")
    with pytest.raises(AnnotationError, match="no gene carries gene_type"):
        read_annotation(write(tmp_path, "untyped.gtf", untyped), LENGTHS, gene_types=["lncRNA"])
    # Without a FASTA every name is kept as written.
    assert {g.chrom for g in read_annotation(write(tmp_path, "par3.gtf", text))} == {"T", "U"}


def test_reads_any_fsspec_url(tmp_path) -> None:
    import fsspec

    with fsspec.open("memory://annotations/genes.gtf.gz", "wb") as f:
        f.write(gzip.compress(gtf_text().encode()))
    local = read_annotation(write(tmp_path, "genes.gtf", gtf_text()), LENGTHS)
    remote = read_annotation("memory://annotations/genes.gtf.gz", LENGTHS)
    assert records(remote) == records(local) and remote.sha256 == local.sha256
    assert remote.name == "genes.gtf.gz" and remote.format == "gtf"
    # A chained URL is named by its file, not by its first link (here only a protocol) nor by an archive.
    cached = read_annotation("simplecache::memory://annotations/genes.gtf.gz", LENGTHS)
    assert (cached.name, cached.format, records(cached)) == ("genes.gtf.gz", "gtf", records(local))
    import zipfile

    with zipfile.ZipFile(tmp_path / "bundle.zip", "w") as z:
        z.writestr("inner/genes.gff3", gff3_text())
    zipped = read_annotation(f"zip://inner/genes.gff3::{tmp_path / 'bundle.zip'}", LENGTHS)
    assert (zipped.name, zipped.format, records(zipped)) == ("genes.gff3", "gff3", records(local))
    with pytest.raises(AnnotationError, match="not found"):
        read_annotation("memory://annotations/missing.gtf")


GOOD = 'chrT\tt\texon\t10\t20\t.\t+\t.\tgene_id "G"; transcript_id "T";'
BAD_GTF = [
    ('chrT\tt\texon\t10\t20\t.\t+\t.', "expected 9 tab-separated fields"),
    ('chrT\tt\texon\tten\t20\t.\t+\t.\tgene_id "G"; transcript_id "T";', "must be integers"),
    ('chrT\tt\texon\t30\t20\t.\t+\t.\tgene_id "G"; transcript_id "T";', "1 <= start <= end"),
    ('chrT\tt\texon\t0\t20\t.\t+\t.\tgene_id "G"; transcript_id "T";', "1 <= start <= end"),
    ('chrT\tt\texon\t10\t20\t.\t.\t.\tgene_id "G"; transcript_id "T";', "strand must be + or -"),
    ('chrT\tt\texon\t10\t20\t.\t+\t.\tgene_id "G";', "needs gene_id and transcript_id"),
    ('chrT\tt\texon\t30\t40\t.\t-\t.\tgene_id "G"; transcript_id "T";', "both strands"),
    ('chrT\tt\texon\t30\t40\t.\t+\t.\tgene_id "H"; transcript_id "T";', "is given gene_id 'H'"),
    ('\tt\texon\t30\t40\t.\t+\t.\tgene_id "H"; transcript_id "T";', "empty seqname"),
]


@pytest.mark.parametrize(("line", "message"), BAD_GTF, ids=[m for _, m in BAD_GTF])
def test_a_bad_gtf_line_is_named(tmp_path, line: str, message: str) -> None:
    path = write(tmp_path, "bad.gtf.gz", f"#header\n{GOOD}\n{line}\n{GOOD}\n")
    with pytest.raises(AnnotationError, match=re.escape(message)) as err:
        read_annotation(path, LENGTHS)
    assert f"{path} line 3:" in str(err.value) and "\n" not in str(err.value)


BAD_GFF3 = [
    ("chrT\tt\texon\t10\t20\t.\t+\t.\tID=e1", 2, "needs a Parent"),
    ("chrT\tt\texon\t10\t20\t.\t+\t.\tParent=nowhere", 2, "'nowhere' is not the ID of any feature"),
    ('chrT\tt\tmRNA\t10\t20\t.\t+\t.\tID=t1; Parent "g"', 2, "are 'key=value' pairs"),
    # The transcript's line is named: its Parent is what is missing.
    ("chrT\tt\tmRNA\t10\t20\t.\t+\t.\tID=t2;Parent=lost\nchrT\tt\texon\t10\t20\t.\t+\t.\tParent=t2", 2,
     "Parent 'lost' is not the ID"),
]


@pytest.mark.parametrize(("lines", "number", "message"), BAD_GFF3, ids=[m for *_, m in BAD_GFF3])
def test_a_bad_gff3_line_is_named(tmp_path, lines: str, number: int, message: str) -> None:
    good = "chrT\tt\tmRNA\t10\t20\t.\t+\t.\tID=t0\nchrT\tt\texon\t10\t20\t.\t+\t.\tParent=t0"
    path = write(tmp_path, "bad.gff3", f"##gff-version 3\n{lines}\n{good}\n")
    with pytest.raises(AnnotationError, match=re.escape(message)) as err:
        read_annotation(path, LENGTHS)
    assert f"line {number}:" in str(err.value)


def test_unreadable_annotations(tmp_path) -> None:
    with pytest.raises(AnnotationError, match="no exon lines"):
        read_annotation(write(tmp_path, "empty.gtf", "#nothing\n"))
    data = gzip.compress(gtf_text().encode())
    (tmp_path / "cut.gtf.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(AnnotationError, match="truncated or corrupt"):
        read_annotation(str(tmp_path / "cut.gtf.gz"))
    with pytest.raises(AnnotationError, match="not found"):
        read_annotation(str(tmp_path / "missing.gtf"))


def test_streaming_memory_does_not_follow_the_file(tmp_path) -> None:
    """GENCODE-like lines (long attributes): the reader's peak is a small fraction of the file, and about the same
    whether each exon line carries 100 or 3,000 bytes of attributes it does not read."""
    rng = random.Random(3)
    genes = {f"G{k:05d}": (f"N{k}", "protein_coding", "chrT", rng.choice("+-"),
                           {f"T{k}_{t}": [(100 * t + 10 * e + 1, 100 * t + 10 * e + 5) for e in range(5)]
                            for t in range(4)}) for k in range(500)}
    peaks, sizes = [], []
    for pad in (100, 3000):
        path = write(tmp_path, f"big{pad}.gtf", gtf_text(genes, noise=" tag " + 'x' * pad + '";'))
        sizes.append(os.path.getsize(path))
        tracemalloc.start()
        annotation = read_annotation(path, LENGTHS)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert annotation.genes == 500 and annotation.exon_lines == 10_000
    assert sizes[1] > 20 * 2**20
    print(f"peaks {peaks}, sizes {sizes}")
    assert peaks[1] < sizes[1] / 4, (peaks, sizes)
    assert peaks[1] < 1.5 * peaks[0], (peaks, sizes)


def test_range_index_against_a_scan() -> None:
    rng = np.random.default_rng(5)
    from enformer_batch.annotation import Gene
    genes = []
    for k in range(300):
        start = int(rng.integers(0, 100_000))
        length = int(rng.choice([50, 500, 20_000]))
        genes.append(Gene("c", f"g{k}", f"g{k}", "+", None, np.array([[start, start + length]]), np.array([start])))
    table = _table(genes)
    for lo in rng.integers(-1000, 110_000, 200):
        hi = int(lo + rng.integers(1, 30_000))
        found = {table.gene_ids[i] for i in table.overlapping(int(lo), hi)}
        assert found == {g.gene_id for g in genes if g.start < hi and g.end > lo}


def _table(genes):
    """A ChromGenes built straight from Gene records (independent of the reader's assembly)."""
    from enformer_batch.annotation import ChromGenes

    genes = sorted(genes, key=lambda g: g.start)
    ex = np.concatenate([g.exons for g in genes])
    eo = np.cumsum([0] + [len(g.exons) for g in genes])
    tss = np.concatenate([g.tss for g in genes])
    to = np.cumsum([0] + [len(g.tss) for g in genes])
    return ChromGenes(genes[0].chrom, [g.gene_id for g in genes], [g.gene_name for g in genes],
                      [g.gene_type for g in genes], np.array([1 if g.strand == "+" else -1 for g in genes], np.int8),
                      ex[:, 0].copy(), ex[:, 1].copy(), eo, tss, to)


# --- bins of a window -------------------------------------------------------------------------------------


def oracle_bins(exons: list[tuple[int, int]], tss: list[int], origin: int, geometry: Geometry, flank: int,
                ) -> tuple[set[int], set[int]]:
    """B_g and T_g straight from the contract's words, base by base."""
    s, n = geometry.bin_size, geometry.output_bins
    exon_bases = {p for a, b in exons for p in range(a, b)}
    b_g = {b for b in range(n) if any(origin + b * s <= p < origin + (b + 1) * s for p in exon_bases)}
    t_g = {b for b in range(n) for t in tss if abs(b - (t - origin) // s) <= flank}  # // is floor, as the contract
    return b_g, t_g


def test_window_origin_follows_the_centring() -> None:
    # Enformer: the variant's first base opens output bin 448.
    p = 1_000_000
    o = window_origin(p, ENFORMER)
    assert o == p - 448 * 128 and (p - o) // 128 == ENFORMER.output_bins // 2
    assert window_origin(p, SMALL) == p - 32 * 16


@pytest.mark.parametrize("flank", [0, 1, 3])
def test_window_masks_against_the_oracle(tmp_path, flank: int) -> None:
    annotation = read_annotation(write(tmp_path, "genes.gtf", gtf_text()), LENGTHS)
    genes = annotation.on("chrT")
    span = SMALL.output_span
    # Origins that put genes wholly inside, half outside (both sides), only a TSS flank inside, and nothing.
    origins = [0, 500, 1000, 1100, 1480, 1490, 1500, 2000 - span + 5, 2399 - span - 16, 2399 - span + 1, 3180,
               3199 + 16 * flank, 3199 + 16 * flank + 16, 5000, 8100, -600]
    origins += random.Random(1).sample(range(-1000, 9500), 60)
    for origin in origins:
        window = window_genes(genes, origin, SMALL, flank)
        expected = {}
        for g in genes:
            b_g, t_g = oracle_bins([tuple(e) for e in g.exons.tolist()], g.tss.tolist(), origin, SMALL, flank)
            if b_g or t_g:
                expected[g.gene_id] = (b_g, t_g)
        assert [g.gene_id for g in window.genes] == sorted(expected), origin
        for g, exon, tss in zip(window.genes, window.exon_mask, window.tss_mask):
            assert set(np.flatnonzero(exon)) == expected[g.gene_id][0], (origin, g.gene_id)
            assert set(np.flatnonzero(tss)) == expected[g.gene_id][1], (origin, g.gene_id)


def test_a_tss_outside_the_output_brings_its_flank_bins() -> None:
    """A − gene whose exon ends just left of the output: its TSS bin is −1, so with flank 1 bin 0 is a TSS bin,
    the gene is in range with B_g empty (sed, logsed null) and T_g = {0}; one bin further it is out of range."""
    s, n = SMALL.bin_size, SMALL.output_bins
    left = _table([_gene("left", "-", [(4900, 5000)], [4999])])
    window = window_genes(left, 5000, SMALL, 1)
    assert [g.gene_id for g in window.genes] == ["left"]
    assert not window.exon_mask[0].any() and np.flatnonzero(window.tss_mask[0]).tolist() == [0]
    valid = gene_validity(window, ("",), GENE_SCORES)
    assert valid[0, :, 0].tolist() == [False, False, True, True]
    assert len(window_genes(left, 5000 + s, SMALL, 1)) == 0
    assert len(window_genes(left, 5000, SMALL, 0)) == 0
    # On the right: a + gene starting one base past the output has TSS bin n; flank 2 reaches n−2 and n−1.
    right = _table([_gene("right", "+", [(5000 + n * s, 5100 + n * s)], [5000 + n * s])])
    window = window_genes(right, 5000, SMALL, 2)
    assert np.flatnonzero(window.tss_mask[0]).tolist() == [n - 2, n - 1] and not window.exon_mask[0].any()


def _gene(gid: str, strand: str, exons, tss, chrom: str = "c"):
    from enformer_batch.annotation import Gene

    return Gene(chrom, gid, gid, strand, None, np.array(exons, np.int64), np.array(sorted(tss), np.int64))


def test_tss_distance_sign_and_ties() -> None:
    plus = _gene("p", "+", [(100, 300)], [100, 200])
    minus = _gene("m", "-", [(100, 300)], [149, 299])
    assert plus.tss_distance(250) == 50 and plus.tss_distance(90) == -10
    assert plus.tss_distance(150) == 50  # equally near 100 and 200: the lower coordinate
    assert minus.tss_distance(140) == 9  # 140 is 9 bp downstream of the − strand TSS at 149
    assert minus.tss_distance(310) == -11  # upstream of the TSS at 299
    assert minus.first_tss == 299 and plus.first_tss == 100


def test_track_strands() -> None:
    assert track_strands(["CNhs10608+", "CNhs10608-", "ENCFF833POA", "x"]) == ("+", "-", "", "")
    assert track_strands(["a+", "b", "c"], ["-", "+", "."]) == ("-", "+", "")
    with pytest.raises(ValueError, match="strand column"):
        track_strands(["a"], ["+", "-"])


# --- scores -----------------------------------------------------------------------------------------------


def oracle_scores(R: np.ndarray, A: np.ndarray, b_g: set[int], t_g: set[int], gene_strand: str,
                  strands: tuple[str, ...]) -> dict[str, list[float | None]]:
    """Gene scores per track from the contract's formulas, with Python floats (double) over explicit bin sets."""
    out = {}
    for name in GENE_SCORES:
        bins = sorted(b_g if name in ("sed", "logsed") else t_g)
        values = []
        for t, strand in enumerate(strands):
            if (strand and strand != gene_strand) or not bins:
                values.append(None)
            elif name in ("sed", "tss"):
                values.append(sum(float(A[b, t]) - float(R[b, t]) for b in bins))
            else:
                values.append(np.log2(sum(float(A[b, t]) for b in bins) + 1)
                              - np.log2(sum(float(R[b, t]) for b in bins) + 1))
        out[name] = values
    return out


@pytest.mark.parametrize("indel", [0, 7, -5], ids=["snv", "insertion", "deletion"])
def test_gene_scores_against_the_oracle(tmp_path, indel: int) -> None:
    """An allele at p: its window's bins start at window_origin(p) whatever its length (bins never re-align),
    so an SNV and an indel at p share the masks; the scores follow the predictions they are given."""
    annotation = read_annotation(write(tmp_path, "genes.gtf", gtf_text()), LENGTHS)
    genes = annotation.on("chrT")
    strands = ("+", "-", "", "+", "-")
    rng = np.random.default_rng(11 + indel)
    for p in (1040, 1560, 2600, 3100):
        origin = window_origin(p, SMALL)
        window = window_genes(genes, origin, SMALL, 1)
        assert len(window) >= 1
        R = rng.gamma(2.0, 3.0, (SMALL.output_bins, len(strands))).astype(np.float32)
        A = (R * rng.uniform(0.5, 1.5, R.shape)).astype(np.float32)
        got = gene_scores(torch.from_numpy(R), torch.from_numpy(A)[None], torch.from_numpy(window.exon_mask),
                          torch.from_numpy(window.tss_mask), GENE_SCORES)[0].numpy()
        valid = gene_validity(window, strands, GENE_SCORES)
        for gi, g in enumerate(window.genes):
            b_g, t_g = oracle_bins([tuple(e) for e in g.exons.tolist()], g.tss.tolist(), origin, SMALL, 1)
            want = oracle_scores(R, A, b_g, t_g, g.strand, strands)
            for k, name in enumerate(GENE_SCORES):
                for t in range(len(strands)):
                    if want[name][t] is None:
                        assert not valid[gi, k, t], (p, g.gene_id, name, t)
                    else:
                        assert valid[gi, k, t], (p, g.gene_id, name, t)
                        assert got[gi, k, t] == pytest.approx(want[name][t], rel=1e-6, abs=1e-5)


def test_a_small_effect_on_a_large_signal_survives() -> None:
    """Per-bin differences summed in float64: Σ(A − R) keeps 0.125 on a 64 × 10⁶ signal that float32 sums of
    A and R would lose."""
    gene_table = _table([_gene("g", "+", [(0, 64 * 16)], [0])])
    window = window_genes(gene_table, 0, SMALL, 1)
    R = np.full((64, 1), 1e6 + 1 / 3, np.float32)
    A = R.copy()
    A[10, 0] += 0.125
    got = gene_scores(torch.from_numpy(R), torch.from_numpy(A)[None], torch.from_numpy(window.exon_mask),
                      torch.from_numpy(window.tss_mask), ("sed",))[0, 0, 0, 0].item()
    assert got == 0.125
    assert float(np.float32(A.sum(dtype=np.float32)) - np.float32(R.sum(dtype=np.float32))) != 0.125


def test_gene_expression_and_exon_fraction(tmp_path) -> None:
    annotation = read_annotation(write(tmp_path, "genes.gtf", gtf_text()), LENGTHS)
    genes = annotation.on("chrT")
    gene_a = next(g for g in genes if g.gene_id == "ENSG_A")
    origin = window_origin(gene_a.first_tss, SMALL)
    window = window_genes(genes, origin, SMALL, 1)
    R = np.random.default_rng(2).gamma(2.0, 1.0, (SMALL.output_bins, 3)).astype(np.float32)
    got = gene_expression(torch.from_numpy(R), torch.from_numpy(window.exon_mask),
                          torch.from_numpy(window.tss_mask)).numpy()
    for gi, g in enumerate(window.genes):
        b_g, t_g = oracle_bins([tuple(e) for e in g.exons.tolist()], g.tss.tolist(), origin, SMALL, 1)
        np.testing.assert_allclose(got[gi, 0], R[sorted(t_g)].astype(np.float64).sum(0), rtol=1e-6)
        np.testing.assert_allclose(got[gi, 1], R[sorted(b_g)].astype(np.float64).sum(0), rtol=1e-6)
    lo, hi = origin, origin + SMALL.output_span
    for g in genes:
        inside = sum(max(0, min(b, hi) - max(a, lo)) for a, b in g.exons.tolist())
        assert exon_fraction(g, lo, hi) == pytest.approx(inside / g.exon_bases())
    assert exon_fraction(gene_a, lo, hi) == 1.0


# --- real gene models: GRCh37 chr20 (spliceai's GENCODE V24lift37 table, from PyPI) ------------------------


def test_real_gene_models_of_chr20(real_genes) -> None:
    """The GTF and GFF3 give the package's own table (read here directly), and the exon boundaries they give
    sit on the genome's splice sites: GT…AG introns (CT…AC on the − strand), as in any real annotation."""
    import pyfaidx

    lengths = {"chr20": 63_025_520}  # the FASTA named as UCSC does; the annotation says "20"
    gtf = read_annotation(real_genes["20.genes.gtf.gz"], lengths)
    gff = read_annotation(real_genes["20.genes.gff3.gz"], lengths)
    assert records(gff) == records(gtf)
    assert gtf.renamed == {"20": "chr20"} and not gtf.unknown
    table = {}
    with open(real_genes["20.genes.spliceai.txt"]) as f:
        for line in f:
            if line.startswith("#"):
                continue
            name, chrom, strand, _, _, starts, ends = line.rstrip("\n").split("\t")
            exons = list(zip(map(int, starts.strip(",").split(",")), map(int, ends.strip(",").split(","))))
            table[name] = (strand, exons)
    assert len(table) == gtf.genes == 544
    for g in gtf:
        strand, exons = table[g.gene_id]
        assert g.strand == strand and g.exons.tolist() == [list(e) for e in sorted(exons)]
        assert g.tss.tolist() == [exons[0][0] if strand == "+" else exons[-1][1] - 1]
    genome = pyfaidx.Fasta(real_genes["20.fa.gz"], as_raw=True)["20"]
    canonical = total = 0
    for g in gtf:
        for (_, left_end), (right_start, _) in zip(g.exons[:-1].tolist(), g.exons[1:].tolist()):
            donor, acceptor = genome[left_end : left_end + 2].upper(), genome[right_start - 2 : right_start].upper()
            total += 1
            canonical += (donor, acceptor) == (("GT", "AG") if g.strand == "+" else ("CT", "AC"))
    assert total > 4000 and canonical / total > 0.97, (canonical, total)
