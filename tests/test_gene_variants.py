"""``score-variants --genes``: gene scores of real model predictions against enformer-pytorch, and of the demo
Borzoi's stranded tracks with --rc --unsquash against borzoi-pytorch, on independently built sequences and
hand-built gene records; end to end on Ray (rows per allele × gene, no_gene, statuses),
validate --vcf --genes, resume after kill -9, the command line, and real 1000 Genomes variants against real
GRCh37 chr20 gene models."""

from __future__ import annotations

import json
import os
from collections import Counter

import duckdb
import numpy as np
import pytest
import torch

from enformer_batch import VariantConfig, score_variants, validate
from enformer_batch.annotation import read_annotation
from enformer_batch.cli import main
from enformer_batch.gene_scores import GENE_SCORES, window_origin
from enformer_batch.genome import FastaSource
from enformer_batch.inference import InferenceSettings, Predictor
from enformer_batch.kinds.scoring import row_part_bounds
from enformer_batch.kinds.variants import VariantMode, VariantPart, stream_parts, with_genes
from enformer_batch.vcf import scan
from enformer_batch.windows import ENFORMER

from .reference import INPUT, onehot, parse_fasta, variant_sequences
from .test_genes import gtf_text, oracle_bins

HEADER = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
SPAN = ENFORMER.output_span


def _other(base: str, k: int = 1) -> str:
    order = "ACGT"
    return order[(order.index(base.upper()) + k) % 4]


# Genes on the session's test genome (conftest.TEST_GENOME: chrA is 300,007 bp, N from 60 kb on).
GENES = {
    # Two transcripts, two TSSs (19,000 and 19,400), exons 6 kb apart.
    "G1": ("ONE", "protein_coding", "chrA", "+", {"t1a": [(19_001, 19_500), (25_001, 25_300)],
                                                  "t1b": [(19_401, 19_600), (25_101, 25_400)]}),
    "G2": ("TWO", "lncRNA", "chrA", "-", {"t2": [(33_001, 34_000), (36_001, 36_200)]}),
    # Reaches far right: half outside the windows of the variants below.
    "G3": ("THREE", "protein_coding", "chrA", "+", {"t3": [(80_001, 80_500), (150_001, 150_200)]}),
    "G4": ("FOUR", "protein_coding", "chrA", "-", {"t4": [(250_001, 250_400)]}),  # out of every window's range
    "G5": ("FIVE", "protein_coding", "chrB", "+", {"t5": [(2_001, 2_300)]}),
    "G9": ("NINE", "protein_coding", "chrZ", "+", {"t9": [(1_001, 1_200)]}),  # the FASTA has no chrZ
}


@pytest.fixture(scope="module")
def genome(test_fasta) -> dict[str, str]:
    return parse_fasta(test_fasta)


@pytest.fixture(scope="module")
def gtf(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("genes") / "genes.gtf"
    path.write_text(gtf_text(GENES))
    return str(path)


@pytest.fixture(scope="module")
def vcf(tmp_path_factory, genome) -> str:
    a, b = genome["chrA"], genome["chrB"]
    lines = [
        f"chrA\t1000\tsnv_left\t{a[999]}\t{_other(a[999])},{_other(a[999], 2)}",  # multi-allelic
        f"chrA\t20000\tmnv\t{a[19999:20002]}\t{''.join(_other(c) for c in a[19999:20002])}",
        f"chrA\t30000\tdel10\t{a[29999:30010]}\t{a[29999]}",
        f"chrA\t40000\tins10\t{a[39999]}\t{a[39999]}ACGTACGTAC",
        f"chrA\t45000\tmismatch\t{_other(a[44999])}\t{a[44999]}",  # ref_mismatch: one row, null genes
        f"chrB\t100000\tfar\t{b[99999]}\t{_other(b[99999])}",  # G5 is 98 kb away: no_gene
        "chrQ\t10\tnowhere\tA\tG",  # unknown_chrom
    ]
    path = tmp_path_factory.mktemp("vcf") / "genes.vcf"
    path.write_text(HEADER + "".join(f"{line}\t.\t.\t.\n" for line in lines))
    return str(path)


def in_range(chrom: str, p: int) -> list[str]:
    """Genes in range of the variant window at ``p``, by the contract's bins (the oracle of test_genes)."""
    found = []
    origin = p - ENFORMER.output_bins // 2 * ENFORMER.bin_size
    for gid, (_, _, gchrom, strand, transcripts) in GENES.items():
        if gchrom != chrom:
            continue
        exons = [(s - 1, e) for ex in transcripts.values() for s, e in ex]
        tss = [min(s for s, _ in ex) - 1 if strand == "+" else max(e for _, e in ex) - 1
               for ex in transcripts.values()]
        b_g, t_g = oracle_bins(exons, tss, origin, ENFORMER, 1)
        if b_g or t_g:
            found.append(gid)
    return sorted(found)


def test_the_genes_in_range_are_the_expected_ones() -> None:
    """The fixture's geometry: what each variant should see (worked out by hand, checked by the oracle)."""
    assert in_range("chrA", 999) == ["G1", "G2"]  # output [-56,345, 58,343): G3 starts at 80,000
    assert in_range("chrA", 39_999) == ["G1", "G2", "G3"]  # output [-17,345, 97,343): G3 half inside
    assert in_range("chrB", 99_999) == []


# --- gene scores of model predictions against enformer-pytorch -------------------------------------------


def _parts(vcf: str, fasta: str, gtf: str, per_part: int = 100):
    lengths = FastaSource(fasta).lengths()
    annotation = read_annotation(gtf, lengths)
    digest = scan(vcf, lengths)
    planned = [VariantPart(chrom, first, end, lengths.get(chrom, 0))
               for chrom, first, end in row_part_bounds(digest.rows_by_chrom, per_part)]
    return list(with_genes(stream_parts(vcf, planned, lengths, digest), annotation, ENFORMER, 1))


def test_gtf_and_gff3_of_the_same_genes_give_the_same_table(vcf, test_fasta, gtf, tmp_path):
    """The whole table, not only the gene records: every allele × gene row and score, from either file (a
    simulated model: its outputs vary with the window's bases, so rows from mismatched genes would differ)."""
    from .test_genes import gff3_text

    gff3 = tmp_path / "genes.gff3"
    gff3.write_text(gff3_text(GENES))
    predictor = Predictor(InferenceSettings(model="sim:rate=100000,tracks=3", dtype="float32"))
    mode = VariantMode(FastaSource(test_fasta), INPUT, ("logsed", "sed", "tss", "logtss", "sad"), genes=True,
                       geometry=ENFORMER, tss_flank=1)
    tables = []
    for path in (gtf, str(gff3)):
        rows = []
        for part in _parts(vcf, test_fasta, path):
            rows += mode.table(part, mode.infer(predictor, part, mode.read(part)), predictor.info).to_pylist()
        tables.append(rows)
    assert tables[0] == tables[1]
    assert {r["gene_id"] for r in tables[0]} == {"G1", "G2", "G3", None}  # G5 is out of range, G9 off the FASTA
    assert sum(r["status"] == "ok" for r in tables[0]) >= 8


@pytest.mark.parametrize("rc", [False, True], ids=["forward", "rc"])
def test_gene_scores_equal_a_direct_computation(oracle_predict, vcf, test_fasta, gtf, genome, rc):
    """SNV, MNV, deletion and insertion: the mode's gene rows equal sums over the oracle's bin sets of
    enformer-pytorch predictions on sequences written from the contract's words, and sad beside them."""
    scores = ("logsed", "sed", "sad", "tss", "logtss")
    predictor = Predictor(InferenceSettings(rc=rc, batch_size=3, dtype="float32"))
    mode = VariantMode(FastaSource(test_fasta), INPUT, scores, genes=True, geometry=ENFORMER, tss_flank=1)
    keep = {"del10", "ins10"} if rc else {"snv_left", "mnv", "del10", "ins10"}
    checked = 0
    for part in _parts(vcf, test_fasta, gtf):
        part = type(part)(part.chrom, part.first, part.end, part.length,
                          tuple(r for r in part.rows if r.id in keep), part.genes)
        if not part.rows:
            continue
        result = mode.infer(predictor, part, mode.read(part))
        table = mode.table(part, result, predictor.info).to_pylist()
        for row in part.rows:
            ref_seq, alt_seq = variant_sequences(genome[part.chrom], row.pos, row.ref, row.alt)

            def predict(seq: str) -> np.ndarray:
                out = oracle_predict(seq, False)
                return (out + oracle_predict(seq, True)) / 2 if rc else out

            R, A = predict(ref_seq), predict(alt_seq)
            rows = [t for t in table if t["pos"] == row.pos and t["alt"] == row.alt]
            assert [t["gene_id"] for t in rows] == in_range(part.chrom, row.pos - 1)
            origin = window_origin(row.pos - 1, ENFORMER)
            for t in rows:
                _, _, _, strand, transcripts = GENES[t["gene_id"]]
                exons = [(s - 1, e) for ex in transcripts.values() for s, e in ex]
                tss = sorted({min(s for s, _ in ex) - 1 if strand == "+" else max(e for _, e in ex) - 1
                              for ex in transcripts.values()})
                b_g, t_g = (sorted(x) for x in oracle_bins(exons, tss, origin, ENFORMER, 1))
                d = [row.pos - 1 - x for x in tss]
                nearest = min(d, key=lambda v: (abs(v), -v))
                assert t["gene_strand"] == strand and t["tss_distance"] == (nearest if strand == "+" else -nearest)
                for track in range(R.shape[1]):
                    name = predictor.info.track_names[track]
                    every = list(range(R.shape[0]))
                    want = {  # score: (value, the bins summed)
                        "sed": ((A[b_g, track] - R[b_g, track]).sum(), b_g),
                        "logsed": (np.log2(A[b_g, track].sum() + 1) - np.log2(R[b_g, track].sum() + 1), b_g),
                        "tss": ((A[t_g, track] - R[t_g, track]).sum(), t_g),
                        "logtss": (np.log2(A[t_g, track].sum() + 1) - np.log2(R[t_g, track].sum() + 1), t_g),
                        "sad": ((A[:, track] - R[:, track]).sum(), every),
                    }
                    for score, (value, bins) in want.items():
                        got = t[f"{score}:{name}"]
                        if not bins:
                            assert got is None, (row.id, t["gene_id"], score)
                            continue
                        # Rounding of the model's fp32 outputs (the near-change path recomputes the alternate
                        # around its change) is relative to the signal summed, not to the difference.
                        signal = 1.0 if score.startswith("log") else np.abs(R[bins, track]).sum()
                        tolerance = 1e-4 * abs(value) + 1e-5 * signal  # ~100 fp32 ulps of the signal
                        assert abs(got - value) <= tolerance, (row.id, t["gene_id"], score, got, value)
                checked += 1
    assert checked >= (5 if rc else 10)


# --- the same for Borzoi: stranded CAGE/RNA tracks, --unsquash, against borzoi-pytorch --------------------


def _annotated_borzoi_pytorch():
    """borzoi-pytorch's AnnotatedBorzoi on the demo Borzoi's weights and track table: its network and its own
    undo of the squashed scale."""
    from .test_borzoi import demo_borzoi_pytorch

    return demo_borzoi_pytorch(annotated=True)


def _borzoi_oracle(ref, seqs: list[str]) -> list[np.ndarray]:
    """Each input's predictions ``[bins, tracks]`` (float64): averaged with the reverse complement (bins reversed,
    each track read from its strand pair), then unsquashed by borzoi-pytorch."""
    df = ref.tracks_df
    pairs = df["strand_pair"].to_numpy()
    x = torch.from_numpy(np.stack([onehot(s) for s in seqs])).transpose(1, 2)  # borzoi-pytorch: [batch, 4, L]
    with torch.no_grad():
        fwd = ref(x).double()  # [batch, tracks, bins]
        rev = ref(x.flip(1).flip(2)).double().flip(2)[:, pairs]
        squashed = (fwd + rev) / 2
        # borzoi-pytorch unsquashes sense and unstranded tracks; the antisense tracks go through their pairs'
        # parameters, which the demo table makes equal to their own (checked here).
        sense, antisense = ref.sense_tracks.numpy(), ref.antisense_tracks.numpy()
        for column in ("scale", "clip_soft", "sum_stat"):
            assert list(df[column].iloc[sense]) == list(df[column].iloc[antisense])
        unsquashed = torch.empty_like(squashed)
        for tracks in (sense, antisense):
            unsquashed[:, tracks] = ref._undo_squashed_scale(squashed[:, tracks].float()).double()
    return [u.numpy().T for u in unsquashed]


def _fast_bins(exons, tss, origin: int, bin_size: int, n_bins: int) -> tuple[list[int], list[int]]:
    """B_g (the bins holding an exonic base) and T_g (bins within one of a TSS's bin), from the contract's words
    base by base over the exons (tests/test_genes.py's oracle_bins scans bins, too slow at 6,144 of them)."""
    b_g = {(p - origin) // bin_size for a, b in exons for p in range(a, b) if origin <= p < origin + n_bins * bin_size}
    t_g = {b for t in tss for b in range((t - origin) // bin_size - 1, (t - origin) // bin_size + 2) if 0 <= b < n_bins}
    return sorted(b_g), sorted(t_g)


def test_borzoi_gene_scores_with_unsquash_and_rc_equal_borzoi_pytorch(test_fasta, gtf, genome, tmp_path):
    """An SNV and a 4-bp deletion at one position (one shared reference window), scored by the demo Borzoi
    with --rc --unsquash: every gene score of every (allele, gene, track) equals sums over hand-built bins of
    borzoi-pytorch's predictions on independently written sequences; the strand rule nulls a + gene's - tracks
    and a - gene's + tracks, and unstranded tracks score both."""
    oracle = _annotated_borzoi_pytorch()
    a = genome["chrA"]
    pos = 25_050  # in an exon of G1 (+); G2 (-) and G3 (+, half outside) are in range of its window too
    records = [("snv", a[pos - 1], _other(a[pos - 1])), ("del4", a[pos - 1 : pos + 4], a[pos - 1])]
    vcf = tmp_path / "borzoi.vcf"
    vcf.write_text(HEADER + "".join(f"chrA\t{pos}\t{i}\t{r}\t{alt}\t.\t.\t.\n" for i, r, alt in records))
    scores = ("logsed", "sed", "tss", "logtss", "sad")
    predictor = Predictor(InferenceSettings(model="demo-borzoi", rc=True, unsquash=True, batch_size=3,
                                            dtype="float32"))
    geometry = predictor.info.geometry
    assert (geometry.input_length, geometry.bin_size, geometry.output_bins) == (524_288, 32, 6144)
    lengths = FastaSource(test_fasta).lengths()
    digest = scan(str(vcf), lengths)
    planned = [VariantPart("chrA", 0, 2, lengths["chrA"])]
    (part,) = with_genes(stream_parts(str(vcf), planned, lengths, digest), read_annotation(gtf, lengths),
                         geometry, 1)
    mode = VariantMode(FastaSource(test_fasta), geometry.input_length, scores, genes=True, geometry=geometry,
                       tss_flank=1)
    table = mode.table(part, mode.infer(predictor, part, mode.read(part)), predictor.info).to_pylist()

    names = list(predictor.info.track_names)
    assert names == list(oracle.tracks_df["identifier"])
    strand_of = {n: n[-1] if n[-1] in "+-" else "" for n in names}
    assert sorted(set(strand_of.values())) == ["", "+", "-"]
    origin = pos - 1 - geometry.output_bins // 2 * geometry.bin_size
    ref_seq, _ = variant_sequences(a, pos, "", "", length=geometry.input_length)
    alt_seqs = [variant_sequences(a, pos, ref, alt, length=geometry.input_length)[1] for _, ref, alt in records]
    R, *alts = _borzoi_oracle(oracle, [ref_seq, *alt_seqs])
    checked = Counter()
    for (rid, _, _), A in zip(records, alts):
        rows = [t for t in table if t["id"] == rid]
        assert [t["gene_id"] for t in rows] == ["G1", "G2", "G3"] and {t["status"] for t in rows} == {"ok"}
        for t in rows:
            _, _, _, strand, transcripts = GENES[t["gene_id"]]
            exons = [(s - 1, e) for ex in transcripts.values() for s, e in ex]
            tss = sorted({min(s for s, _ in ex) - 1 if strand == "+" else max(e for _, e in ex) - 1
                          for ex in transcripts.values()})
            b_g, t_g = _fast_bins(exons, tss, origin, geometry.bin_size, geometry.output_bins)
            assert b_g and t_g and t["gene_strand"] == strand
            nearest = min((pos - 1 - x for x in tss), key=lambda v: (abs(v), -v))
            assert t["tss_distance"] == (nearest if strand == "+" else -nearest)
            for k, name in enumerate(names):
                every = list(range(geometry.output_bins))
                want = {  # score: (value, the bins summed)
                    "sed": ((A[b_g, k] - R[b_g, k]).sum(), b_g),
                    "logsed": (np.log2(A[b_g, k].sum() + 1) - np.log2(R[b_g, k].sum() + 1), b_g),
                    "tss": ((A[t_g, k] - R[t_g, k]).sum(), t_g),
                    "logtss": (np.log2(A[t_g, k].sum() + 1) - np.log2(R[t_g, k].sum() + 1), t_g),
                    "sad": ((A[:, k] - R[:, k]).sum(), every),
                }
                for score, (value, bins) in want.items():
                    got = t[f"{score}:{name}"]
                    if score != "sad" and strand_of[name] not in ("", strand):
                        assert got is None, (rid, t["gene_id"], score, name)
                        checked["null"] += 1
                        continue
                    signal = 1.0 if score.startswith("log") else np.abs(R[bins, k]).sum()
                    tolerance = 1e-4 * abs(value) + 1e-5 * signal
                    assert got is not None and abs(got - value) <= tolerance, (rid, t["gene_id"], score, name,
                                                                               got, value)
                    checked[strand_of[name] or "unstranded"] += 1
    # Both alleles × 3 genes × 4 gene scores: 4 unstranded tracks always, 4 of the 8 stranded ones, 4 null.
    assert checked["null"] == 2 * 3 * 4 * 4 and checked["unstranded"] == 2 * 3 * 5 * 4


# --- end to end on Ray ------------------------------------------------------------------------------------


def read_table(out) -> list[dict]:
    return duckdb.sql(f"select * from read_parquet('{out}/*/*.parquet', hive_partitioning=true) "
                      "order by chrom, pos, alt, gene_id").df().to_dict("records")


@pytest.fixture(scope="module")
def scored(ray_cluster, vcf, test_fasta, gtf, tmp_path_factory):
    out = tmp_path_factory.mktemp("gene_variants") / "scores"
    config = VariantConfig(vcf=vcf, fasta=test_fasta, out=str(out), genes=gtf, scores=("logsed", "sad", "tss"),
                           variants_per_part=3, threads_per_worker=1, progress=False)
    return config, score_variants(config)


def _null(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def test_rows_per_allele_and_gene_land_once_and_validate(scored, vcf, test_fasta, gtf):
    config, summary = scored
    rows = read_table(config.out)
    by_allele: dict = {}
    for r in rows:
        by_allele.setdefault((r["id"], r["alt"]), []).append(r)
    assert len(by_allele) == 8  # every split ALT
    for (vid, _), group in by_allele.items():
        genes = [g["gene_id"] for g in group]
        statuses = {g["status"] for g in group}
        if vid == "mismatch":
            assert statuses == {"ref_mismatch"} and [_null(g) for g in genes] == [True]
        elif vid == "nowhere":
            assert statuses == {"unknown_chrom"} and len(group) == 1 and _null(group[0]["sad:DEMO0000001"])
        elif vid == "far":
            assert statuses == {"no_gene"} and len(group) == 1 and _null(group[0]["logsed:DEMO0000001"])
            assert not _null(group[0]["sad:DEMO0000001"])  # the allele is scored: its variant scores are there
        else:
            pos = group[0]["pos"]
            assert statuses == {"ok"} and genes == in_range(group[0]["chrom"], pos - 1)
            assert len({g["sad:DEMO0000001"] for g in group}) == 1  # the allele's sad repeats on each gene row
    columns = list(rows[0])
    assert columns[:9] == ["pos", "id", "ref", "alt", "status", "gene_id", "gene_name", "gene_strand",
                           "tss_distance"]
    assert columns[9].startswith("logsed:") and "chrom" in columns
    assert summary.counts["no_gene"] == 1 and summary.counts["ok"] == 5
    assert any("genes on chromosomes the FASTA lacks" in n and "chrZ (1)" in n for n in summary.notes)
    report = validate(config.out, fasta=test_fasta, vcf=vcf, inputs={"genes": gtf})
    assert report.ok, report.table()
    assert validate(config.out, vcf=vcf).ok  # the alleles alone, gene columns aside
    identity = json.loads(open(os.path.join(config.out, "_manifest.json")).read())["identity"]
    assert identity["genes"]["tss_flank"] == 1 and identity["genes"]["genes"] == 5


def test_validate_catches_another_annotation_and_a_missing_gene_row(scored, vcf, gtf, tmp_path):
    config, _ = scored
    other = tmp_path / "other.gtf"
    other.write_text(gtf_text({k: v for k, v in GENES.items() if k != "G2"}))
    report = validate(config.out, vcf=vcf, inputs={"genes": str(other)})
    assert not report.ok
    assert any("not the annotation" in p for p in report.problems)
    assert any("not in the input" in p and "G2" in p for p in report.problems)


def test_gene_rows_on_ray_equal_the_mode_in_process(scored, vcf, test_fasta, gtf):
    config, _ = scored
    rows = read_table(config.out)
    torch.set_num_threads(1)
    predictor = Predictor(InferenceSettings(dtype="float32"))
    mode = VariantMode(FastaSource(test_fasta), INPUT, config.scores, genes=True, geometry=ENFORMER, tss_flank=1)
    compared = 0
    for part in _parts(vcf, test_fasta, gtf):
        for want in mode.table(part, mode.infer(predictor, part, mode.read(part)), predictor.info).to_pylist():
            got = [r for r in rows if r["pos"] == want["pos"] and r["alt"] == want["alt"]
                   and (r["gene_id"] == want["gene_id"] or (_null(r["gene_id"]) and want["gene_id"] is None))]
            assert len(got) == 1
            for key, value in want.items():
                if ":" in key and value is not None:
                    assert got[0][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
                    compared += 1
    assert compared > 30


def test_rerun_resumes(scored):
    config, _ = scored
    again = score_variants(config)
    assert again.units_computed == 0 and again.resumed_parts == again.parts


KILLED_DRIVER = """
import sys, ray
from enformer_batch import VariantConfig, score_variants
ray.init(address="local", num_cpus=2, object_store_memory=100 * 1024**2, include_dashboard=False, logging_level="ERROR")
score_variants(VariantConfig(vcf=sys.argv[1], fasta=sys.argv[2], out=sys.argv[3], genes=sys.argv[4],
                             scores=("logsed", "sad", "tss"), variants_per_part=3, threads_per_worker=1,
                             manifest_interval_s=0, progress=False))
"""


def test_a_killed_driver_resumes_to_the_uninterrupted_table(scored, vcf, test_fasta, gtf, tmp_path):
    """The uninterrupted table is the module's ``scored`` run, with the same configuration: the same parts and
    batches (which decide the last bits of fp32 scores), one thread per replica."""
    from .test_faults import assert_same_rows, kill_driver_after_commits

    out = tmp_path / "interrupted"
    interrupted = kill_driver_after_commits(KILLED_DRIVER, [vcf, test_fasta, str(out), gtf], out)
    kept = {p["path"]: p["sha256"] for p in interrupted["parts"]}
    assert interrupted["status"] == "running" and not validate(str(out), vcf=vcf, inputs={"genes": gtf}).ok
    config = dict(vcf=vcf, fasta=test_fasta, genes=gtf, scores=("logsed", "sad", "tss"), variants_per_part=3,
                  threads_per_worker=1, progress=False)
    resumed = score_variants(VariantConfig(out=str(out), **config))
    assert resumed.resumed_parts >= len(kept) and resumed.units_computed < resumed.units
    assert validate(str(out), fasta=test_fasta, vcf=vcf, inputs={"genes": gtf}).ok
    straight, _ = scored
    assert straight == VariantConfig(out=straight.out, **config)
    straight = straight.out
    order = "order by chrom, pos, alt, gene_id"
    assert_same_rows(*(duckdb.sql(f"select * from read_parquet('{o}/*/*.parquet', hive_partitioning=true) {order}")
                       .fetchnumpy() for o in (out, straight)))


def test_the_command_line(ray_cluster, vcf, test_fasta, gtf, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["score-variants", vcf, "--fasta", test_fasta, "--genes", gtf, "--out", str(out),
                 "--gene-types", "protein_coding", "--tss-flank", "2", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = read_table(out)
    assert [c for c in rows[0] if ":" in c][0].startswith("logsed:")  # the default score with --genes
    assert "G2" not in {r["gene_id"] for r in rows}  # lncRNA left out
    # validate re-reads the annotation with the run's --gene-types: G2 is not expected.
    assert main(["validate", str(out), "--vcf", vcf, "--genes", gtf]) == 0
    assert "chrA   300007              6           6" in capsys.readouterr().out  # alleles, not gene rows
    bad = main(["score-variants", vcf, "--fasta", test_fasta, "--out", str(tmp_path / "x"), "--tss-flank", "2"])
    assert bad != 0 and "need --genes" in capsys.readouterr().err
    bad = main(["score-variants", vcf, "--fasta", test_fasta, "--out", str(tmp_path / "y"), "--scores", "sed"])
    assert bad != 0 and "need --genes" in capsys.readouterr().err


def test_bad_gene_options_are_refused(vcf, test_fasta, gtf, tmp_path):
    with pytest.raises(ValueError, match="drop --group-bp"):
        VariantConfig(vcf=vcf, fasta=test_fasta, out=str(tmp_path), genes=gtf, group_bp=100).check()
    with pytest.raises(ValueError, match="subset of"):
        VariantConfig(vcf=vcf, fasta=test_fasta, out=str(tmp_path), genes=gtf, scores=("sed", "nope")).check()
    assert set(GENE_SCORES) == {"sed", "logsed", "tss", "logtss"}
    # Nothing to score: refused before Ray or the model start, naming why, and nothing is written.
    elsewhere = tmp_path / "chrz.gtf"
    elsewhere.write_text(gtf_text({k: v for k, v in GENES.items() if v[2] == "chrZ"}))
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=r"chrz.gtf: no gene on a chromosome of \S+: 1 genes are on chromosomes "
                                         r"\S+ lacks \(chrZ\)$"):
        score_variants(VariantConfig(vcf=vcf, fasta=test_fasta, out=str(out), genes=str(elsewhere), progress=False))
    with pytest.raises(ValueError, match=r"test\S*: --gene-types left out 6 genes$"):
        score_variants(VariantConfig(vcf=vcf, fasta=test_fasta, out=str(out), genes=gtf, gene_types=("protein-coding",),
                                     progress=False))
    assert not out.exists()


# --- real data: 1000 Genomes SNVs on GRCh37 chr20 against spliceai's GENCODE gene models -------------------


def test_real_variants_against_real_genes(ray_cluster, real_genes, tmp_path):
    """Real SNVs (4.vcf.gz) on the real chromosome: every allele scored, each with exactly its genes in range
    (validate --vcf --genes), tss_distance from the package's own table, and the README's recipes run."""
    import gzip

    data = os.path.dirname(real_genes["20.fa.gz"])
    vcf = tmp_path / "snvs.vcf.gz"
    lines, kept = [], 0
    with gzip.open(os.path.join(data, "4.vcf.gz"), "rt") as f:
        for line in f:
            if not line.startswith("#"):
                if kept == 12:
                    break
                kept += 1
            lines.append(line)
    with gzip.open(vcf, "wt") as f:
        f.writelines(lines)
    out = tmp_path / "scores"
    fasta = real_genes["20.fa.gz"]
    summary = score_variants(VariantConfig(vcf=str(vcf), fasta=fasta, out=str(out), genes=real_genes["20.genes.gtf.gz"],
                                           scores=("logsed", "sed", "sad"), variants_per_part=4,
                                           threads_per_worker=1, progress=False))
    assert sum(summary.counts.values()) == 12 and not set(summary.counts) - {"ok", "no_gene"}
    report = validate(str(out), fasta=fasta, vcf=str(vcf), inputs={"genes": real_genes["20.genes.gtf.gz"]})
    assert report.ok, report.table()
    table = {}
    with open(real_genes["20.genes.spliceai.txt"]) as f:
        for line in f:
            if not line.startswith("#"):
                name, _, strand, start, end, *_ = line.split("\t")
                table[name] = (strand, int(start) if strand == "+" else int(end) - 1)
    rows = read_table(out)
    genes = [r for r in rows if not _null(r["gene_id"])]
    assert genes, "the first SNVs of 4.vcf.gz lie near genes"
    for r in genes:
        strand, tss = table[r["gene_id"]]
        assert r["gene_strand"] == strand
        assert r["tss_distance"] == (r["pos"] - 1 - tss) * (1 if strand == "+" else -1)
    top, per_variant, per_gene = readme_gene_recipes(out, track="DEMO0000009")
    with_exons = [r for r in genes if not _null(r["logsed:DEMO0000009"])]  # a TSS flank alone: null logsed
    assert len(top) == min(20, len(with_exons))
    assert [abs(t[-1]) for t in top] == sorted((abs(t[-1]) for t in top), reverse=True)
    assert {(v[1], v[4]) for v in per_variant} == {(r["pos"], r["alt"]) for r in with_exons}
    assert all(v[-2] in {r["gene_name"] for r in with_exons if r["pos"] == v[1]} for v in per_variant)
    by_gene: dict[str, list] = {}
    for r in with_exons:
        by_gene.setdefault(r["gene_id"], []).append(r)
    assert len(per_gene) == min(20, len(by_gene))
    for gene_id, _, variants, top_variant, largest in per_gene:
        rows = by_gene[gene_id]
        best = max(rows, key=lambda r: abs(r["logsed:DEMO0000009"]))
        assert variants == len(rows) and largest == pytest.approx(abs(best["logsed:DEMO0000009"]))
        assert top_variant == f"{best['chrom']}:{best['pos']}{best['ref']}>{best['alt']}"


def readme_gene_recipes(out, track: str) -> list[list[tuple]]:
    """The README's gene recipes (DuckDB), as a user would paste them, on ``out``."""
    from .test_faults import REPO

    readme = open(os.path.join(REPO, "README.md")).read()
    block = readme.split("Recipes (DuckDB, genes)", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    statements = [q for q in block.replace("scores/", f"{out}/").replace("CNhs11250", track).split(";")
                  if q.strip()]
    assert len(statements) == 3
    return [duckdb.sql(q).fetchall() for q in statements]
