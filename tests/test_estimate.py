"""The dry-run planner: exact tiling counts (a run's own plan), size and cost estimates, `plan` command; gene and
variant runs (genes and model inputs counted independently, and against a run's own count)."""

from __future__ import annotations

import numpy as np
import pytest

from enformer_batch.cli import main as cli_main
from enformer_batch.estimate import GPU_PROFILES, estimate_bytes, plan_genes, plan_run, plan_variants
from enformer_batch.families import FAMILIES
from enformer_batch.store import part_table, serialise_table
from enformer_batch.windows import (
    DEFAULT_ROWS_PER_PART,
    ENFORMER,
    Tiling,
    plan_chromosome,
    windows_per_part_for_rows,
)

from .conftest import TEST_GENOME

SPAN = ENFORMER.output_span


def computed_windows(tiling: Tiling) -> int:
    """Windows owning at least one bin: at strides below the span the last ones may own none (never run)."""
    return sum(1 for k in range(tiling.n_windows) if tiling.owned_bins(k)[1] > tiling.owned_bins(k)[0])


@pytest.mark.parametrize("stride", [SPAN, SPAN // 2, 128 * 100])
def test_windows_and_bins_match_the_tiling(test_fasta, stride):
    plan = plan_run(test_fasta, stride=stride, windows_per_second=10, price_per_hour=1)
    tilings = {c.name: Tiling(ENFORMER, c.length, stride) for c in TEST_GENOME}
    assert [c.chrom for c in plan.chroms] == [c.name for c in TEST_GENOME]
    for chrom in plan.chroms:
        tiling = tilings[chrom.chrom]
        assert chrom.windows == computed_windows(tiling)
        assert chrom.bins == tiling.n_bins == -(-chrom.length // 128)
        # Parts sized by rows: ~14,336 bins each, whatever the stride; windows owning no bin make no part.
        per_part = windows_per_part_for_rows(DEFAULT_ROWS_PER_PART, ENFORMER, stride)
        assert chrom.parts == -(-computed_windows(tiling) // per_part)
    if stride == SPAN:
        assert plan.windows == sum(t.n_windows for t in tilings.values())
    assert plan.bins == sum(t.n_bins for t in tilings.values())


def test_chroms_and_regions_count_only_what_a_run_writes(test_fasta, tmp_path):
    assert [c.chrom for c in plan_run(test_fasta, chroms=["chrB"]).chroms] == ["chrB"]
    bed = tmp_path / "r.bed"
    bed.write_text("chrB\t1000\t1300\nchrB\t120000\t130000\nchrA\t0\t129\n")
    plan = plan_run(test_fasta, regions=str(bed))
    by = {c.chrom: c for c in plan.chroms}
    assert set(by) == {"chrA", "chrB"}
    # The same bins test_pipeline's region run writes: 2 on chrA, 4 + 79 on chrB, from 1 + 2 windows.
    assert by["chrA"].bins == 2 and by["chrB"].bins == 4 + 79
    assert by["chrA"].windows == 1 and by["chrB"].windows == 2


def test_track_count_comes_from_the_checkpoint_config(test_fasta):
    assert plan_run(test_fasta, model="demo").tracks == 12  # the demo model's human head
    assert plan_run(test_fasta, model="demo", head="mouse").tracks == 4
    assert plan_run(test_fasta, model="demo", tracks="0-3,7").tracks == 5
    assert plan_run(test_fasta).tracks == 5313  # the default: the full-size Enformer
    assert plan_run(test_fasta, model="enformer").tracks == 5313
    assert plan_run(test_fasta, model="enformer", head="mouse", n_tracks=100).tracks == 100
    with pytest.raises(ValueError, match="out of range"):
        plan_run(test_fasta, model="demo", tracks="12")


@pytest.mark.parametrize("dtype,tracks", [("float16", 12), ("float16", 400), ("float32", 400)])
def test_byte_estimate_is_close_to_a_real_part(dtype, tracks):
    """The estimate against store.serialise_table on a 16-window part of smooth positive values."""
    part = plan_chromosome("chr1", 16 * SPAN, ENFORMER, SPAN, 16)[0]
    rng = np.random.default_rng(0)
    shape = (len(part.windows), ENFORMER.output_bins, tracks)
    values = np.exp(rng.normal(0, 1, shape)).repeat(8, axis=1)[:, : ENFORMER.output_bins]
    values = values * (1 + 0.1 * rng.random(shape))
    names = [f"t{i}" for i in range(tracks)]
    table = part_table(part, values, np.ones(len(part.windows), bool), names, dtype, 128)
    actual = len(serialise_table(table))
    estimate = estimate_bytes(table.num_rows, 1, tracks, dtype)
    assert 0.8 < estimate / actual < 1.25, (estimate, actual)


def test_gpu_hours_and_cost(test_fasta):
    plan = plan_run(test_fasta, windows_per_second=2.0, price_per_hour=3.0, rc=True, shifts=(-1, 0, 1))
    assert plan.passes_per_window == 6
    assert plan.gpu_hours == pytest.approx(plan.windows * 6 / 2.0 / 3600)
    assert plan.cost == pytest.approx(plan.gpu_hours * 3.0)
    default = plan_run(test_fasta, gpu="H100")
    assert default.windows_per_second == GPU_PROFILES["H100"].windows_per_second
    assert default.price_per_hour == GPU_PROFILES["H100"].price_per_gpu_hour
    with pytest.raises(ValueError, match="no default figures"):
        plan_run(test_fasta, gpu="TPUv9")
    assert plan_run(test_fasta, gpu="TPUv9", windows_per_second=5, price_per_hour=1).gpu == "TPUv9"


def test_plan_command(test_fasta, tmp_path, capsys):
    assert cli_main(["plan", test_fasta, "--gpu", "A10G", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    windows = sum(Tiling(ENFORMER, c.length, SPAN).n_windows for c in TEST_GENOME)
    bins = sum(-(-c.length // 128) for c in TEST_GENOME)
    assert total.split()[2:4] == [f"{windows:,}", f"{bins:,}"]
    assert "ESTIMATE" in out and "A10G" in out and "5,313 × float32" in out
    # Without --model the plan is for the full-size Enformer, and it says so.
    assert "Enformer, full size" in out and "no --model" in out
    assert cli_main(["plan", test_fasta, "--model", "demo", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "12 × float32" in out and "demo" in out and "no --model" not in out
    sizes = tmp_path / "genome.chrom.sizes"
    sizes.write_text("".join(f"{c.name}\t{c.length}\n" for c in TEST_GENOME))
    assert cli_main(["plan", str(sizes), "--model", "enformer"]) == 0
    assert f"{windows:,}" in capsys.readouterr().out
    assert cli_main(["plan", "--list-gpus", test_fasta]) == 0
    assert "H100" in capsys.readouterr().out
    assert cli_main(["plan", test_fasta, "--gpu", "nope"]) == 2


# --- gene and variant runs --------------------------------------------------------------------------------

# Exon lines of a small GTF: two transcripts of one gene, a - gene, a lncRNA, a gene on a chromosome the FASTA
# lacks, and one gene_id on two chromosomes (two genes, as GENCODE's pseudo-autosomal ones).
GTF_EXONS = [  # chrom, start, end, strand, gene_id, gene_type, transcript_id
    ("chrA", 1_001, 1_500, "+", "A1", "protein_coding", "a1.1"),
    ("chrA", 2_001, 2_300, "+", "A1", "protein_coding", "a1.1"),
    ("chrA", 1_201, 1_600, "+", "A1", "protein_coding", "a1.2"),
    ("chrA", 9_001, 9_400, "-", "A2", "protein_coding", "a2.1"),
    ("chrA", 20_001, 20_100, "+", "A3", "lncRNA", "a3.1"),
    ("chrA", 40_001, 40_100, "-", "A4", "lncRNA", "a4.1"),
    ("chrB", 7_001, 7_200, "+", "B1", "protein_coding", "b1.1"),
    ("chrB", 8_001, 8_200, "+", "PAR", "protein_coding", "par.1"),
    ("contig_s", 101, 200, "+", "PAR", "protein_coding", "par.2"),
    ("chrZ", 101, 200, "+", "Z1", "protein_coding", "z1.1"),
]


def write_gtf(path) -> str:
    lines = ["##description: plan test"]
    for chrom, start, end, strand, gid, gtype, tid in GTF_EXONS:
        attrs = f'gene_id "{gid}"; gene_type "{gtype}"; transcript_id "{tid}";'
        lines.append(f"{chrom}\ttest\texon\t{start}\t{end}\t.\t{strand}\t.\t{attrs}")
        lines.append(f"{chrom}\ttest\tCDS\t{start}\t{end}\t.\t{strand}\t0\t{attrs}")  # not an exon: not a gene
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def genes_by_chrom(types: set[str] | None = None) -> dict[str, int]:
    """The genes a run would compute, counted straight from GTF_EXONS: distinct gene_ids per FASTA chromosome."""
    fasta = {c.name for c in TEST_GENOME}
    found: dict[str, set[str]] = {}
    for chrom, _, _, _, gid, gtype, _ in GTF_EXONS:
        if chrom in fasta and (types is None or gtype in types):
            found.setdefault(chrom, set()).add(gid)
    return {chrom: len(ids) for chrom, ids in found.items()}


def test_plan_genes_counts_one_window_per_gene(test_fasta, tmp_path):
    gtf = write_gtf(tmp_path / "genes.gtf")
    want = genes_by_chrom()
    assert want == {"chrA": 4, "chrB": 2, "contig_s": 1}
    plan = plan_genes(test_fasta, gtf, model="demo", rc=True, shifts=(0, 1), gpu="A100", windows_per_second=2.0,
                      price_per_hour=3.0, genes_per_part=3)
    assert {c.chrom: (c.units, c.windows, c.parts) for c in plan.chroms} == {
        chrom: (n, n, -(-n // 3)) for chrom, n in want.items()}
    assert plan.units == plan.windows == plan.rows == 7 and plan.parts == 4
    assert plan.passes_per_window == 4 and plan.values_per_row == 2 * 12  # tss: and exon: per track
    assert plan.gpu_hours == pytest.approx(7 * 4 / 2.0 / 3600)
    assert plan.cost == pytest.approx(plan.gpu_hours * 3.0)
    assert plan.output_bytes == estimate_bytes(7, 4, 24, "float32")
    lnc = plan_genes(test_fasta, gtf, gene_types=["lncRNA"], model="demo", gpu="H100")
    assert lnc.windows == sum(genes_by_chrom({"lncRNA"}).values()) == 2
    assert lnc.windows_per_second == GPU_PROFILES["H100"].windows_per_second
    borzoi = plan_genes(test_fasta, gtf, model="borzoi", gpu="H100")
    assert borzoi.windows == 7 and borzoi.tracks == 7611 and borzoi.geometry.input_length == 524_288
    assert borzoi.windows_per_second == pytest.approx(GPU_PROFILES["H100"].windows_per_second_at(
        FAMILIES["borzoi"].tflop_per_window, FAMILIES["borzoi"].utilisation))


VCF_LINES = [  # chrom, pos, ref, alts
    ("chrA", 1_000, "A", "C,G"),  # one position, two alleles
    ("chrA", 1_000, "AC", "A"),  # the same position: the same reference window (part 1: alleles 1-3)
    ("chrA", 5_000, "A", "T"),  # part 2 opens here (3 alleles per part)
    ("chrA", 5_000, "A", "<DEL>"),  # symbolic: not computed
    ("chrA", 5_000, "A", "G"),  # part 2 still: shares the reference of 5,000
    ("chrA", 5_000, "A", "C"),  # part 3: the same position again, a new reference
    ("chrB", 300, "A", "T"),
    ("chrQ", 10, "A", "G"),  # a chromosome the FASTA lacks: a part, nothing computed
]


def counted_windows(per_part: int) -> dict[str, tuple[int, int, int]]:
    """(alleles, references, computed alleles) per chromosome from VCF_LINES: a run's parts are consecutive
    alleles of a chromosome, each sharing one reference window per distinct position among its computed
    alleles (computed: on a FASTA chromosome, not symbolic)."""
    fasta = {c.name for c in TEST_GENOME}
    alleles: dict[str, list[tuple[int, str]]] = {}
    for chrom, pos, _, alts in VCF_LINES:
        alleles.setdefault(chrom, []).extend((pos, alt) for alt in alts.split(","))
    out = {}
    for chrom, rows in alleles.items():
        refs = computed = 0
        for k in range(0, len(rows), per_part):
            chunk = [pos for pos, alt in rows[k : k + per_part] if chrom in fasta and not alt.startswith("<")]
            refs, computed = refs + len(set(chunk)), computed + len(chunk)
        out[chrom] = (len(rows), refs, computed)
    return out


def write_vcf(path, genome: dict[str, str]) -> str:
    rows = []
    for chrom, pos, ref, alts in VCF_LINES:
        if chrom in genome:  # REFs that match: the run computes every allele the plan counts
            ref = genome[chrom][pos - 1 : pos - 1 + len(ref)]
            alts = ",".join(a if a.startswith("<") else ref[0] + a[1:] if len(a) > 1 else
                            ("T" if ref[0] != "T" else "G") if len(ref) == 1 else ref[0] for a in alts.split(","))
            alts = ",".join(dict.fromkeys(alts.split(",")))  # an SNV drawn twice stays one allele
        rows.append(f"{chrom}\t{pos}\t.\t{ref}\t{alts}\t.\t.\t.")
    path.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "\n".join(rows) + "\n")
    return str(path)


def test_plan_variants_counts_references_and_alternates(test_fasta, tmp_path):
    from .reference import parse_fasta

    vcf = tmp_path / "v.vcf"
    lines = list(VCF_LINES)
    (tmp_path / "raw.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n"
                                      + "".join(f"{c}\t{p}\t.\t{r}\t{a}\n" for c, p, r, a in lines))
    want = counted_windows(3)
    assert want == {"chrA": (7, 3, 6), "chrB": (1, 1, 1), "chrQ": (1, 0, 0)}
    plan = plan_variants(test_fasta, str(tmp_path / "raw.vcf"), model="demo", variants_per_part=3,
                         windows_per_second=4.0, price_per_hour=2.0, rc=True)
    assert {c.chrom: (c.units, c.references, c.windows - c.references) for c in plan.chroms} == want
    assert [c.parts for c in plan.chroms] == [3, 1, 1]
    assert plan.windows == 3 + 6 + 1 + 1 and plan.rows == plan.units == 9
    assert plan.gpu_hours == pytest.approx(plan.windows * 2 / 4.0 / 3600)
    assert plan.values_per_row == 12  # sad × 12 tracks
    assert plan_variants(test_fasta, str(tmp_path / "raw.vcf"), model="demo",
                         scores=["sad", "center"]).values_per_row == 24
    with pytest.raises(ValueError, match="gene scores need --genes"):
        plan_variants(test_fasta, str(tmp_path / "raw.vcf"), scores=["logsed"])

    # The windows are the model inputs a run computes: score the same VCF (REFs matching the genome) in process.
    from enformer_batch.genome import FastaSource
    from enformer_batch.inference import InferenceSettings, Predictor
    from enformer_batch.kinds.scoring import row_part_bounds
    from enformer_batch.kinds.variants import VariantMode, VariantPart, stream_parts
    from enformer_batch.vcf import scan

    matched = write_vcf(vcf, parse_fasta(test_fasta))
    plan = plan_variants(test_fasta, matched, model="demo", variants_per_part=3)
    lengths = FastaSource(test_fasta).lengths()
    digest = scan(matched, lengths)
    planned = [VariantPart(chrom, first, end, lengths.get(chrom, 0))
               for chrom, first, end in row_part_bounds(digest.rows_by_chrom, 3)]
    mode = VariantMode(FastaSource(test_fasta), ENFORMER.input_length, ("sad",))
    # The simulated accelerator computes nothing (and paces nothing at this rate): what is counted is the inputs.
    predictor = Predictor(InferenceSettings(model="sim:rate=100000,tracks=2", batch_size=4, dtype="float32"))
    computed = {}
    for part in stream_parts(matched, planned, lengths, digest):
        result = mode.infer(predictor, part, mode.read(part))
        assert "ref_mismatch" not in result.statuses
        computed[part.chrom] = computed.get(part.chrom, 0) + result.sequences
    assert {c.chrom: c.windows for c in plan.chroms} == {chrom: computed.get(chrom, 0) for chrom in computed}
    assert plan.parts == len(planned)


def test_plan_variants_with_genes_has_the_same_windows_and_says_what_it_leaves_out(test_fasta, tmp_path):
    (tmp_path / "raw.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n"
                                      + "".join(f"{c}\t{p}\t.\t{r}\t{a}\n" for c, p, r, a in VCF_LINES))
    gtf = write_gtf(tmp_path / "genes.gtf")
    plain = plan_variants(test_fasta, str(tmp_path / "raw.vcf"), model="demo")
    genes = plan_variants(test_fasta, str(tmp_path / "raw.vcf"), genes=gtf, gene_types=["protein_coding"],
                          model="demo")
    assert genes.windows == plain.windows and genes.gpu_hours == plain.gpu_hours
    assert plain.rows == 9 and genes.rows == gene_rows({"protein_coding"}, flank=1) == 16
    assert genes.values_per_row == 12  # the default with --genes: logsed
    text = str(genes)
    assert "5 genes" in text and "2 genes left out by --gene-types" in text  # A3, A4 are lncRNAs
    assert "--genes adds no window" in text and "16 rows (alleles × genes in range, --tss-flank 1)" in text
    assert genes.output_bytes == estimate_bytes(16, genes.parts, 12, "float32")
    every = plan_variants(test_fasta, str(tmp_path / "raw.vcf"), genes=gtf, tss_flank=0, model="demo")
    assert every.rows == gene_rows(None, flank=0) == 28


def gene_rows(types: set[str] | None, flank: int) -> int:
    """Rows of score-variants --genes on VCF_LINES and GTF_EXONS, from the contract's words: an allele that is
    computed has one row per gene with an exon bin or a TSS bin in its window (at least one row); any other
    allele one row."""
    from .test_genes import oracle_bins

    fasta = {c.name for c in TEST_GENOME}
    genes: dict[tuple[str, str], dict[str, list[tuple[int, int]]]] = {}
    strands = {}
    for chrom, start, end, strand, gid, gtype, tid in GTF_EXONS:
        if types is None or gtype in types:
            genes.setdefault((chrom, gid), {}).setdefault(tid, []).append((start - 1, end))
            strands[(chrom, gid)] = strand
    rows = 0
    for chrom, pos, _, alts in VCF_LINES:
        for alt in alts.split(","):
            if chrom not in fasta or alt.startswith("<"):
                rows += 1
                continue
            origin = pos - 1 - ENFORMER.output_bins // 2 * ENFORMER.bin_size
            found = 0
            for (gchrom, gid), transcripts in genes.items():
                if gchrom != chrom:
                    continue
                exons = [e for ex in transcripts.values() for e in ex]
                tss = [min(a for a, _ in ex) if strands[(gchrom, gid)] == "+" else max(b for _, b in ex) - 1
                       for ex in transcripts.values()]
                b_g, t_g = oracle_bins(exons, tss, origin, ENFORMER, flank)
                found += bool(b_g or t_g)
            rows += max(found, 1)
    return rows


def test_plan_command_for_genes_and_variants(test_fasta, tmp_path, capsys):
    gtf = write_gtf(tmp_path / "genes.gtf")
    assert cli_main(["plan", test_fasta, "--genes", gtf, "--gene-types", "lncRNA", "--model", "demo-borzoi",
                     "--rc"]) == 0
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[1:] == ["2", "2", "1"]  # genes, windows, parts
    assert "predict-genes" in out and "4 (2 per window" in out and "Borzoi" in out
    (tmp_path / "raw.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n"
                                      + "".join(f"{c}\t{p}\t.\t{r}\t{a}\n" for c, p, r, a in VCF_LINES))
    assert cli_main(["plan", test_fasta, "--vcf", str(tmp_path / "raw.vcf"), "--genes", gtf]) == 0
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert counted_windows(256) == {"chrA": (7, 2, 6), "chrB": (1, 1, 1), "chrQ": (1, 0, 0)}
    assert total.split()[1:] == ["9", "3", "7", "10", "3"]  # alleles, references, alternates, windows, parts
    assert "score-variants" in out and "--genes adds no window" in out and "Enformer, full size" in out
    assert f"{gene_rows(None, flank=1):,} rows" in out
    assert cli_main(["plan", test_fasta, "--vcf", str(tmp_path / "raw.vcf"), "--genes", gtf, "--tss-flank", "0"]) == 0
    assert f"{gene_rows(None, flank=0):,} rows (alleles × genes in range, --tss-flank 0)" in capsys.readouterr().out
    assert cli_main(["plan", test_fasta, "--vcf", str(tmp_path / "raw.vcf"), "--tss-flank", "0"]) == 2
    assert "--tss-flank need --genes" in capsys.readouterr().err
    assert cli_main(["plan", test_fasta, "--genes", gtf, "--stride", "128"]) == 2
    assert "--stride: atlas options" in capsys.readouterr().err
    assert cli_main(["plan", test_fasta, "--gene-types", "lncRNA"]) == 2
    assert "need --genes or --vcf" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["plan", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--genes GTF" in text and "--vcf VCF" in text and "one window per gene" in text
