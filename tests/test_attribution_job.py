"""The ``attribute`` job on the real engine (a local Ray cluster, the demo model): rows, exactly once, resume after
kill -9, the exports and the command line's one-line errors. The gradients themselves are checked against
enformer-pytorch and borzoi-pytorch in tests/test_attribution.py; here the job's rows are compared with the
one-device ``Attributor`` on the same windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from enformer_batch import AttributionConfig, attribute, validate
from enformer_batch.attribution import Attributor, region_bins, region_rows
from enformer_batch.genome import encode
from enformer_batch.inference import Predictor
from enformer_batch.settings import InferenceSettings
from enformer_batch.windows import ENFORMER

from .reference import parse_fasta

# Equal lengths (a MoDISco export); chrB's N stretch [5000, 6000) covers most of the second region; the third runs
# into chrA's N from 60,000 on; the order is not sorted and chromosomes alternate.
REGIONS = [("chrA", 10_000, 10_300), ("chrB", 4_900, 5_200), ("chrA", 59_900, 60_200), ("chrA", 20_000, 20_300)]
OPTIONS = dict(tracks="0,2", target="region", log=True, rc=True, regions_per_part=2, batch_size=2,
               threads_per_worker=1, progress=False)


def _bed(tmp_path, regions=REGIONS) -> str:
    path = tmp_path / "regions.bed"
    path.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in regions))
    return str(path)


def _rows(out) -> dict:
    import duckdb

    return duckdb.sql(f"select * from read_parquet('{out}/*/*.parquet') order by region, pos").fetchnumpy()


@pytest.fixture(scope="module")
def run(ray_cluster, test_fasta, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attribute")
    out = tmp / "out"
    summary = attribute(AttributionConfig(fasta=test_fasta, regions=_bed(tmp), out=str(out), **OPTIONS))
    return out, summary


def test_rows_are_the_attributors_and_exactly_once(run, test_fasta):
    out, summary = run
    assert summary.units == 4 and summary.parts == 3 and summary.unit == "region"  # chrA | chrB | chrA, chrA
    report = validate(str(out), fasta=test_fasta)
    assert report.ok, report.table()
    rows = _rows(out)
    assert len(rows["pos"]) == 4 * 300
    assert all(rows[c].dtype == np.float32 for c in ("attr", "hyp_a", "hyp_c", "hyp_g", "hyp_t"))
    genome = parse_fasta(test_fasta)
    for chrom, s, e in REGIONS:
        here = rows["region"] == f"{chrom}:{s}-{e}"
        assert np.array_equal(rows["pos"][here], np.arange(s + 1, e + 1))
        expected_ref = [b.upper() if b.upper() in "ACGT" else "N" for b in genome[chrom][s:e]]
        assert list(rows["ref"][here]) == expected_ref
        n = np.array(expected_ref) == "N"
        assert np.all(rows["attr"][here][n] == 0)  # N bases contribute nothing
        hyp = np.stack([rows[f"hyp_{b}"][here] for b in "acgt"], axis=1)
        assert np.allclose(hyp.sum(1), 0, atol=1e-6 * np.abs(hyp).max())
    assert (rows["ref"] == "N").sum() > 300  # the test hits N bases at all

    # One region recomputed on one device, outside Ray, from the contract's window.
    chrom, s, e = REGIONS[3]
    m = (s + e) // 2
    window = "".join(genome[chrom][q] if 0 <= q < len(genome[chrom]) else "N"
                     for q in range(m - ENFORMER.input_length // 2, m + ENFORMER.input_length // 2))
    settings = InferenceSettings(tracks="0,2", precision="fp32", rc=True, dtype="float32", compile="off")
    attributor = Attributor(Predictor(settings, device="cpu"))
    lo, hi = region_rows(ENFORMER, s, e, m)
    want = attributor.attribute(encode(window)[None], region_bins(ENFORMER, s, e, m)[None], [(lo, hi)], log=True)[0]
    here = rows["region"] == f"{chrom}:{s}-{e}"
    scale = float(np.abs(want.hyp).max())
    assert np.allclose(rows["attr"][here], want.attr, rtol=0, atol=1e-5 * scale)
    assert np.allclose(rows["hyp_g"][here], want.hyp[:, 2], rtol=0, atol=1e-5 * scale)

    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["identity"]["target"] == "region" and manifest["identity"]["log"] is True
    assert manifest["identity"]["precision"] == "fp32"  # auto means fp32 for gradients


def test_a_rerun_resumes_and_another_target_is_refused(run, test_fasta, tmp_path):
    out, _ = run
    bed = str(out.parent / "regions.bed")
    again = attribute(AttributionConfig(fasta=test_fasta, regions=bed, out=str(out), **OPTIONS))
    assert again.resumed_parts == 3 and again.units_computed == 0
    with pytest.raises(Exception, match="another|differ|--overwrite"):
        attribute(AttributionConfig(fasta=test_fasta, regions=bed, out=str(out), **{**OPTIONS, "target": "center"}))


def test_modisco_export_round_trips_through_the_job(run, tmp_path):
    from enformer_batch.export import export_modisco

    out, _ = run
    ohe_path, shap_path = export_modisco(str(out), str(tmp_path / "modisco"))
    ohe, shap = np.load(ohe_path)["arr_0"], np.load(shap_path)["arr_0"]  # as `modisco motifs` loads them
    assert ohe.shape == shap.shape == (4, 4, 300)
    rows = _rows(out)
    for k, (chrom, s, e) in enumerate(REGIONS):  # the run's order
        here = rows["region"] == f"{chrom}:{s}-{e}"
        ref = rows["ref"][here]
        for c, base in enumerate("ACGT"):
            assert np.array_equal(ohe[k, c], (ref == base).astype(np.float32))
            assert np.array_equal(shap[k, c], rows[f"hyp_{base.lower()}"][here])


def test_command_line_and_one_line_errors(run, test_fasta, tmp_path, capsys):
    from enformer_batch.cli import main

    out, _ = run
    png = tmp_path / "logo.png"
    assert main(["plot-attribution", str(out), "--region", "chrA:10000-10300", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["export-attributions", str(out), "--format", "modisco", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "shap.npz").is_file()
    capsys.readouterr()

    bed = str(out.parent / "regions.bed")
    for bad, message in [
        (["--target", "gene:NOPE"], "--target gene:NOPE needs --genes GTF: the gene models its exons come from"),
        (["--target", "bins"], "--target must be center, region or gene:NAME, got 'bins'"),
        (["--compile", "on"], "attribute runs the model eager (torch.compile here compiles inference only): drop "
                              "--compile on"),
    ]:
        code = main(["attribute", test_fasta, bed, "--out", str(tmp_path / "bad"), "--no-progress", *bad])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == f"enformer-batch: error: {message}", err

    unequal = tmp_path / "unequal"
    attribute(AttributionConfig(fasta=test_fasta, regions=_bed(tmp_path, [("chrA", 0, 100), ("chrA", 500, 550)]),
                                out=str(unequal), **{**OPTIONS, "rc": False}))
    assert main(["export-attributions", str(unequal), "--format", "modisco", "--out", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("enformer-batch: error: TF-MoDISco needs regions of one length; chrA:0-100 is 100 bp and "
                   "chrA:500-550 is 50 bp (2 lengths among 2 regions)"), err


DRIVER = """
import sys
from enformer_batch import AttributionConfig, attribute
attribute(AttributionConfig(fasta=sys.argv[1], regions=sys.argv[2], out=sys.argv[3], regions_per_part=1,
                            batch_size=1, threads_per_worker=1, progress=False, manifest_interval_s=0.2))
"""


def test_a_killed_driver_resumes(ray_cluster, test_fasta, tmp_path):
    from .test_faults import kill_driver_after_commits

    bed = _bed(tmp_path, [("chrA", 1_000 + 5_000 * k, 1_100 + 5_000 * k) for k in range(6)])
    out = tmp_path / "out"
    interrupted = kill_driver_after_commits(DRIVER, [test_fasta, bed, str(out)], out)
    kept = {p["path"]: p["sha256"] for p in interrupted["parts"]}
    assert interrupted["status"] == "running" and 2 <= len(kept) < 6
    assert not validate(str(out)).ok
    resumed = attribute(AttributionConfig(fasta=test_fasta, regions=bed, out=str(out), regions_per_part=1,
                                          batch_size=1, threads_per_worker=1, progress=False))
    assert resumed.resumed_parts >= len(kept) and resumed.units_computed == 6 - resumed.resumed_parts
    report = validate(str(out), fasta=test_fasta)
    assert report.ok, report.table()
    final = json.loads((out / "_manifest.json").read_text())
    assert all(p["sha256"] == kept[p["path"]] for p in final["parts"] if p["path"] in kept)
    assert len(_rows(out)["pos"]) == 600


# --- gene targets ---------------------------------------------------------------------------------------------

# GENEX is two genes, as GENCODE's pseudo-autosomal genes are: ENSGX1 on chrA (−, two transcripts) and ENSGX2 on
# chrB (+); ONLYB is only on chrB; FAR lies beyond the output of a window on chrA:10000-10300. 1-based inclusive.
GENE_MODELS = [
    ("chrA", "-", "ENSGX1", "GENEX", "tX1", [(15_001, 15_300), (25_001, 25_400)]),
    ("chrA", "-", "ENSGX1", "GENEX", "tX2", [(15_101, 15_500), (30_001, 30_200)]),
    ("chrB", "+", "ENSGX2", "GENEX", "tX3", [(3_001, 3_200), (7_001, 7_500)]),
    ("chrB", "+", "ENSGB", "ONLYB", "tB1", [(9_001, 9_100)]),
    ("chrA", "+", "ENSGF", "FAR", "tF1", [(250_001, 250_500)]),
]
GENE_REGIONS = [("chrA", 10_000, 10_300), ("chrB", 4_000, 4_300)]
GENE_OPTIONS = dict(tracks="0,1,5", target="gene:GENEX", log=True, regions_per_part=1, batch_size=1,
                    threads_per_worker=1, progress=False)


def _gtf(tmp_path, extra: str = "") -> str:
    path = tmp_path / "genes.gtf"
    lines = [f'{chrom}\ttest\texon\t{s}\t{e}\t.\t{strand}\t.\tgene_id "{gid}"; transcript_id "{tid}"; '
             f'gene_name "{name}";' for chrom, strand, gid, name, tid, exons in GENE_MODELS for s, e in exons]
    path.write_text("\n".join(lines) + "\n" + extra)
    return str(path)


@pytest.fixture(scope="module")
def gene_run(ray_cluster, test_fasta, tmp_path_factory):
    """A gene target over two regions on two chromosomes, on a demo checkpoint whose track table has a strand
    column (0 +, 1 -, 5 unstranded among the selected)."""
    from .test_attribution import _checkpoint

    tmp = tmp_path_factory.mktemp("attribute_gene")
    model = _checkpoint(tmp, "stranded", stranded=True)
    options = dict(fasta=test_fasta, regions=_bed(tmp, GENE_REGIONS), genes=_gtf(tmp), model=model, **GENE_OPTIONS)
    summary = attribute(AttributionConfig(out=str(tmp / "out"), **options))
    return tmp / "out", summary, options


def test_gene_target_rows_are_the_attributors_on_the_genes_strand(gene_run, test_fasta):
    import hashlib

    from enformer_batch.export import describe_target

    out, summary, options = gene_run
    assert summary.units == 2 and summary.parts == 2
    assert any("ENSGX1 (GENEX) on chrA (-)" in note for note in summary.notes)
    report = validate(str(out), fasta=test_fasta)
    assert report.ok, report.table()
    identity = json.loads((out / "_manifest.json").read_text())["identity"]
    assert identity["target"] == "gene:GENEX"
    with open(options["genes"], "rb") as f:
        assert identity["genes"]["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert identity["genes"]["target"] == [
        {"chrom": "chrA", "gene_id": "ENSGX1", "gene_name": "GENEX", "strand": "-"},
        {"chrom": "chrB", "gene_id": "ENSGX2", "gene_name": "GENEX", "strand": "+"}]
    assert identity["genes"]["track_strands"] == ["+", "-", ""]
    # The logo's title names the gene, and the tracks its target averages.
    assert describe_target(identity, "chrA") == ("ln(1 + Σ over the exon bins of GENEX (ENSGX1, - strand) of the "
                                                 "mean of DEMO0000002, DEMO0000006)")
    from enformer_batch.cli import main

    png = out.parent / "gene-logo.png"
    assert main(["plot-attribution", str(out), "--region", "chrB:4000-4300", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"

    # The chrA region recomputed on one device from the contract: the merged exons' bins in its window, the mean
    # over the − and unstranded tracks.
    genome = parse_fasta(test_fasta)
    chrom, s, e = GENE_REGIONS[0]
    m = (s + e) // 2
    window = "".join(genome[chrom][q] if 0 <= q < len(genome[chrom]) else "N"
                     for q in range(m - ENFORMER.input_length // 2, m + ENFORMER.input_length // 2))
    o = m - (ENFORMER.output_bins // 2) * ENFORMER.bin_size
    exons = [(15_000, 15_500), (25_000, 25_400), (30_000, 30_200)]
    bins = np.array([any(o + b * 128 < hi and lo < o + (b + 1) * 128 for lo, hi in exons) for b in range(896)])
    settings = InferenceSettings(model=options["model"], tracks="0,1,5", precision="fp32", dtype="float32",
                                 compile="off")
    attributor = Attributor(Predictor(settings, device="cpu"))
    lo, hi = region_rows(ENFORMER, s, e, m)
    want = attributor.attribute(encode(window)[None], bins[None], [(lo, hi)], log=True,
                                tracks=np.array([[False, True, True]]))[0]
    rows = _rows(out)
    here = rows["region"] == f"{chrom}:{s}-{e}"
    scale = float(np.abs(want.hyp).max())
    assert scale > 0
    assert np.allclose(rows["attr"][here], want.attr, rtol=0, atol=1e-5 * scale)
    assert np.allclose(rows["hyp_a"][here], want.hyp[:, 0], rtol=0, atol=1e-5 * scale)


def test_gene_target_resumes_and_a_changed_annotation_is_refused(gene_run, tmp_path):
    out, _, options = gene_run
    again = attribute(AttributionConfig(out=str(out), **options))
    assert again.resumed_parts == 2 and again.units_computed == 0
    changed = _gtf(tmp_path, extra="#another release\n")
    with pytest.raises(Exception, match="genes differ"):
        attribute(AttributionConfig(out=str(out), **{**options, "genes": changed}))


def test_gene_target_errors_are_one_line(gene_run, test_fasta, tmp_path, capsys):
    from enformer_batch.cli import main

    out, _, options = gene_run
    bed, gtf = _bed(tmp_path, GENE_REGIONS[:1]), options["genes"]
    for bad, message in [
        (["--target", "gene:NOPE", "--genes", gtf], "--target gene:NOPE: no gene in genes.gtf has gene_id or "
                                                    "gene_name 'NOPE'"),
        (["--target", "gene:ONLYB", "--genes", gtf], "--target gene:ONLYB: region chrA:10000-10300 is on chrA, but "
                                                     "ONLYB is on chrB (+)"),
        (["--target", "gene:", "--genes", gtf], "--target 'gene:': give a gene_id or gene_name after 'gene:', e.g. "
                                                "gene:GATA1"),
        (["--target", "region", "--genes", gtf], "--genes is read only for --target gene:NAME (the target here is "
                                                 "region); drop --genes or name a gene"),
        (["--target", "gene:FAR", "--genes", gtf], "--target gene:FAR: no exon of ENSGF (chrA:250000-250500) lies in "
                                                   "the output of region chrA:10000-10300's window, [-47194, 67494) "
                                                   "on chrA"),
    ]:
        code = main(["attribute", test_fasta, bed, "--out", str(tmp_path / "bad"), "--no-progress", *bad])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == f"enformer-batch: error: {message}", err

    # A gene strand none of the selected tracks is on (nor unstranded): refused before any gradient.
    from enformer_batch.kinds.attribution import KIND, AttributionJob

    job = AttributionJob(AttributionConfig(out=str(tmp_path / "bad"), **{**options, "regions": bed}), KIND)
    job.prepare()
    with pytest.raises(ValueError, match=r"^--target gene:GENEX: ENSGX1 is on the - strand and none of the selected "
                                         r"tracks \(T0\+, T1\+\) is on it or unstranded$"):
        job.check_gene_target(ENFORMER, ("+", "+"), ("T0+", "T1+"))
    job.check_gene_target(ENFORMER, ("+", ""), ("T0+", "T1"))


def test_gene_names_filter_the_annotation_and_place_the_target(tmp_path):
    """read_annotation(gene_names=...) keeps only genes named so (gene_id or gene_name), in GTF and GFF3 alike,
    with the whole file hashed; the target gene is placed per chromosome, gene_ids first."""
    from enformer_batch.annotation import read_annotation
    from enformer_batch.kinds.attribution import find_target_genes
    from enformer_batch.kinds.mutagenesis import Region

    from .test_genes import GENES, LENGTHS, gff3_text, gtf_text, records, write

    for name, text in [("g.gtf", gtf_text()), ("g.gff3", gff3_text())]:
        path = write(tmp_path, name, text)
        every = read_annotation(path, LENGTHS)
        for wanted, ids in [(["BETA"], ["ENSG_B"]), (["ENSG_C"], ["ENSG_C"]), (["ENSG_A", "EPS"], ["ENSG_A", "ENSG_E"]),
                            (["NONE"], [])]:
            got = read_annotation(path, LENGTHS, gene_names=wanted)
            assert [g.gene_id for g in got] == ids, (name, wanted)
            assert records(got) == [r for r in records(every) if r[1] in ids]
            assert got.sha256 == every.sha256
    # A name that is one gene's gene_id and another's gene_name: the gene_id wins.
    genes = {**GENES, "ENSG_D": ("ENSG_A", "lncRNA", "chrT", "+", {"tD1": [(5001, 5100)]})}
    annotation = read_annotation(write(tmp_path, "d.gtf", gtf_text(genes)), LENGTHS, gene_names=["ENSG_A"])
    assert sorted(g.gene_id for g in annotation) == ["ENSG_A", "ENSG_D"]
    region = Region("chrT", 1_000, 1_100, "chrT:1000-1100")
    assert find_target_genes(annotation, "ENSG_A", [region])["chrT"].gene_id == "ENSG_A"
    # A versioned gene_id answers to its unversioned form too (what users type), before any gene_name.
    genes = {**GENES, "ENSG_V.7": ("VEE", "lncRNA", "chrT", "+", {"tV1": [(7001, 7100)]})}
    for name, text in [("v.gtf", gtf_text(genes)), ("v.gff3", gff3_text(genes))]:
        annotation = read_annotation(write(tmp_path, name, text), LENGTHS, gene_names=["ENSG_V"])
        assert [g.gene_id for g in annotation] == ["ENSG_V.7"], name
        assert find_target_genes(annotation, "ENSG_V", [region])["chrT"].gene_id == "ENSG_V.7"
    # One name on both strands of one chromosome cannot be placed.
    genes = {**GENES, "ENSG_B2": ("BETA", "lncRNA", "chrT", "+", {"tB3": [(6001, 6100)]})}
    annotation = read_annotation(write(tmp_path, "b.gtf", gtf_text(genes)), LENGTHS, gene_names=["BETA"])
    with pytest.raises(ValueError, match=r"^--target gene:BETA names 2 genes on chrT: ENSG_B \(-\), ENSG_B2 \(\+\); "
                                         r"name one by its gene_id$"):
        find_target_genes(annotation, "BETA", [region])
    # Only on a chromosome the FASTA lacks.
    annotation = read_annotation(write(tmp_path, "z.gtf", gtf_text()), LENGTHS, gene_names=["ZED"])
    with pytest.raises(ValueError, match=r"no gene in z.gtf has gene_id or gene_name 'ZED' \(only on chrZ, which "
                                         r"the FASTA lacks\)$"):
        find_target_genes(annotation, "ZED", [region])
