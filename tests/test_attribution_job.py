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
        (["--target", "gene:NOPE"], "--target gene:NOPE: gene targets need gene annotations (--genes), which this "
                                    "version does not read yet; use center or region"),
        (["--target", "bins"], "--target must be center or region, got 'bins'"),
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
