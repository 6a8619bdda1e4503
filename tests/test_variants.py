"""Variant scoring: the VCF reader, the contract's ref/alt sequences and scores (enformer-pytorch as oracle),
end to end on Ray with DuckDB read-back, validate --vcf, resume and bad input."""

from __future__ import annotations

import gzip
import json
import os

import duckdb
import numpy as np
import pytest
import torch

from enformer_batch import VariantConfig, score_variants, validate
from enformer_batch.cli import main
from enformer_batch.genome import encode
from enformer_batch.inference import InferenceSettings, Predictor
from enformer_batch.kinds.scoring import SCORES, alternate_codes, group_centres, read_variant_inputs
from enformer_batch.kinds.variants import VariantMode, plan_parts, stream_parts
from enformer_batch.vcf import VcfError, read_rows, scan
from enformer_batch.windows import ENFORMER

from .reference import INPUT, parse_fasta, variant_sequences, write_bgzf

HEADER = "##fileformat=VCFv4.2\n##contig=<ID=chrA>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def _other(base: str, k: int = 1) -> str:
    order = "ACGT"
    return order[(order.index(base.upper()) + k) % 4]


@pytest.fixture(scope="session")
def genome(test_fasta) -> dict[str, str]:
    return parse_fasta(test_fasta)


@pytest.fixture(scope="session")
def vcf_text(genome) -> str:
    """Every kind of row the contract names, on the session's test genome (see conftest.TEST_GENOME)."""
    a, b, s = genome["chrA"], genome["chrB"], genome["contig_s"]
    lines = [
        f"chrA\t1000\trs1\t{a[999]}\t{_other(a[999])},{_other(a[999], 2)}\t.\tPASS\t.",  # multi-allelic SNV
        f"chrA\t20000\trs2\t{a[19999:20002]}\t{''.join(_other(c) for c in a[19999:20002])}\t.\t.\t.",  # MNV
        f"chrA\t30000\tdel10\t{a[29999:30010]}\t{a[29999]}\t.\t.\t.",  # 10-bp deletion
        f"chrA\t40000\tins10\t{a[39999]}\t{a[39999]}ACGTACGTAC\t.\t.\t.",  # 10-bp insertion
        f"chrB\t3\tedge\t{b[2].lower()}\t{_other(b[2])}\t.\t.\t.",  # window mostly padding; lowercase REF
        f"B\t129990\tprefix\t{b[129989]}\t{_other(b[129989])}\t.\t.\t.",  # 'B' matches chrB through 'chr'
        "chrB\t5500\tin_n\tA\tG\t.\t.\t.",  # the FASTA holds N here: n_at_variant, still scored
        f"chrB\t1000\tmismatch\t{_other(b[999])}\tA\t.\t.\t.",
        f"chrB\t2000\tsym\t{b[1999]}\t<DEL>,*\t.\t.\t.",
        "chrQ\t10\tnowhere\tA\tG\t.\t.\t.",
        f"contig_s\t500\t.\t{s[499]}\t{_other(s[499])}\t.\t.\t.",
    ]
    return HEADER + "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def vcf_path(tmp_path_factory, vcf_text) -> str:
    path = tmp_path_factory.mktemp("vcf") / "test.vcf"
    path.write_text(vcf_text)
    return str(path)


EXPECTED_STATUS = {
    "rs1": ["ok", "ok"], "rs2": ["ok"], "del10": ["ok"], "ins10": ["ok"], "edge": ["ok"], "prefix": ["ok"],
    "in_n": ["n_at_variant"], "mismatch": ["ref_mismatch"], "sym": ["symbolic", "symbolic"],
    "nowhere": ["unknown_chrom"], None: ["ok"],
}


# --- reading VCFs ---------------------------------------------------------------------------------


def test_rows_split_alleles_keep_line_numbers_and_flag_symbolic(vcf_path, test_fasta):
    rows = list(read_rows(vcf_path))
    assert len(rows) == 13  # 11 records, two of them with two ALTs
    first = [r for r in rows if r.id == "rs1"]
    assert [r.line for r in first] == [4, 4] and first[0].alt != first[1].alt
    assert [r.symbolic for r in rows if r.id == "sym"] == [True, True]
    assert [r for r in rows if r.id is None][0].chrom == "contig_s"
    from enformer_batch.genome import FastaSource

    digest = scan(vcf_path, FastaSource(test_fasta).lengths())
    assert digest.renamed == {"B": "chrB"} and digest.unknown == {"chrQ": 1}
    assert digest.rows_by_chrom == {"chrA": 5, "chrB": 6, "chrQ": 1, "contig_s": 1}


def test_gzip_and_bgzip_read_as_the_plain_file(vcf_path, vcf_text, tmp_path, test_fasta):
    from enformer_batch.genome import FastaSource

    lengths = FastaSource(test_fasta).lengths()
    gz = tmp_path / "v.vcf.gz"
    gz.write_bytes(gzip.compress(vcf_text.encode()))
    bgz = str(tmp_path / "v.bgz.vcf.gz")
    write_bgzf(bgz, vcf_text.encode(), block=100)  # many blocks
    plain = scan(vcf_path, lengths)
    for path in (str(gz), bgz):
        assert list(read_rows(path)) == list(read_rows(vcf_path))
        assert scan(path, lengths) == plain  # same content hash: the identity is the records, not the wrapper


BAD_VCFS = [
    ("no header", "chrA\t5\t.\tA\tG\n", "line 1: not a VCF"),
    ("record before #CHROM", "##fileformat=VCFv4.2\nchrA\t5\t.\tA\tG\n", "line 2: a record before"),
    ("text POS", HEADER + "chrA\tfive\t.\tA\tG\n", "line 4: POS must be an integer"),
    ("POS 0", HEADER + "chrA\t0\t.\tA\tG\n", "line 4: POS must be at least 1"),
    ("bad REF", HEADER + "chrA\t5\t.\tA-\tG\n", "line 4: REF must be bases"),
    ("bad ALT", HEADER + "chrA\t5\t.\tA\tG,X\n", "line 4: ALT allele 'X'"),
    ("space-separated", HEADER + "chrA 5 . A G\n", "line 4: expected tab-separated"),
    ("empty file", "", "is empty"),
]


@pytest.mark.parametrize("text, message", [c[1:] for c in BAD_VCFS], ids=[c[0] for c in BAD_VCFS])
def test_malformed_vcfs_fail_naming_the_line(tmp_path, text, message):
    path = tmp_path / "bad.vcf"
    path.write_text(text)
    with pytest.raises(VcfError, match=message):
        list(read_rows(str(path)))


def test_truncated_gzip_fails_with_one_clear_message(tmp_path, vcf_text):
    data = gzip.compress((vcf_text * 200).encode())
    path = tmp_path / "cut.vcf.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VcfError, match="truncated or corrupt"):
        list(read_rows(str(path)))


# --- sequences and scores against independent readings of the contract ----------------------------


def _parts(vcf_path, test_fasta, per_part=100):
    from enformer_batch.genome import FastaSource

    return _stream(vcf_path, FastaSource(test_fasta).lengths(), per_part)


def _stream(vcf, lengths, per_part):
    """The parts a run streams: planned from the first pass's row counts, filled by the second pass."""
    digest = scan(vcf, lengths)
    planned = plan_parts({"fasta": {"chromosomes": lengths}, "vcf": {"rows_by_chrom": digest.rows_by_chrom},
                          "variants_per_part": per_part})
    return list(stream_parts(vcf, planned, lengths, digest))


@pytest.mark.parametrize("group_bp", [0, 20_000])
def test_alternate_sequences_are_the_contracts(vcf_path, test_fasta, genome, group_bp):
    """Reference and alternate inputs built from shared windows equal the contract's words, base by base."""
    from enformer_batch.genome import FastaSource

    for part in _parts(vcf_path, test_fasta):
        inputs = read_variant_inputs(FastaSource(test_fasta), part.chrom, part.length, part.rows, INPUT, group_bp)
        windows, alts = torch.from_numpy(inputs.windows), torch.from_numpy(inputs.alt_codes)
        for j, i in enumerate(inputs.rows):
            row = part.rows[i]
            g, offset = int(inputs.group[j]), int(inputs.offset[j])
            centre = row.pos - 1 + INPUT // 2 - offset  # the window's centre position (0-based)
            shifted_pos = centre + 1  # a variant at the window centre reads the reference window there
            ref_want, _ = variant_sequences(genome[part.chrom], shifted_pos, "", "")
            _, alt_want = variant_sequences(genome[part.chrom], row.pos, row.ref, row.alt) if group_bp == 0 \
                else (None, None)
            assert np.array_equal(inputs.windows[g, :INPUT], encode(ref_want)), (row, group_bp)
            alt = alternate_codes(windows[g], offset, int(inputs.ref_len[j]),
                                  alts[inputs.alt_start[j] : inputs.alt_start[j + 1]], INPUT)
            if group_bp == 0:
                assert np.array_equal(alt.numpy(), encode(alt_want)), row
            else:  # the same edit, at the variant's own offset in the shared window
                left = ref_want[:offset]
                p = row.pos - 1
                right_start = p + len(row.ref)
                right = "".join(genome[part.chrom][q] if q < len(genome[part.chrom]) else "N"
                                for q in range(right_start, right_start + INPUT))
                assert np.array_equal(alt.numpy(), encode((left + row.alt + right)[:INPUT])), row


def test_group_centres_cluster_within_the_distance():
    assert group_centres([5, 5, 9], 0) == [5, 5, 9]
    assert group_centres([100, 0, 10, 50, 60, 71], 10) == [100, 5, 5, 55, 55, 71]


def oracle_scores(oracle_predict, genome: dict, chrom: str, row, rc: bool) -> np.ndarray:
    """``[4 scores, tracks]`` from enformer-pytorch on independently built sequences, in float64."""
    ref_seq, alt_seq = variant_sequences(genome[chrom], row.pos, row.ref, row.alt)

    def predict(seq: str) -> np.ndarray:
        out = oracle_predict(seq, False)
        return (out + oracle_predict(seq, True)) / 2 if rc else out

    r, a = predict(ref_seq), predict(alt_seq)
    centre = ENFORMER.output_bins // 2
    return np.stack([(a - r).sum(0), np.log2(a.sum(0) + 1) - np.log2(r.sum(0) + 1),
                     np.sqrt(((a - r) ** 2).sum(0)), (a - r)[centre]])


def _assert_close(ours: np.ndarray, want: np.ndarray, what: str) -> None:
    """Per score and track: ≤ 1e-4 relative to the largest magnitude of that score and track over the rows."""
    scale = np.abs(want).max(axis=0)
    assert (scale > 0).all(), what
    err = np.abs(ours - want).max(axis=0) / scale
    assert err.max() <= 1e-4, (what, float(err.max()))


@pytest.mark.parametrize("rc", [False, True], ids=["forward", "rc"])
def test_scores_equal_enformer_pytorch_on_independent_sequences(oracle_predict, vcf_path, test_fasta, genome, rc):
    from enformer_batch.genome import FastaSource

    # Every kind of scored row (multi-allelic SNV, MNV, deletion, insertion, padding, N); with --rc three.
    kinds = {"rs1", "del10", "ins10"} | (set() if rc else {"rs2", "edge", "in_n"})
    predictor = Predictor(InferenceSettings(rc=rc, batch_size=3))
    mode = VariantMode(FastaSource(test_fasta), INPUT, SCORES)
    ours, want = [], []
    for part in _parts(vcf_path, test_fasta):
        part = type(part)(part.chrom, part.first, part.end, part.length, tuple(r for r in part.rows if r.id in kinds))
        if not part.rows:
            continue
        inputs = mode.read(part)
        result = mode.infer(predictor, part, inputs)
        for j, i in enumerate(result.rows):
            ours.append(result.scores[j])
            want.append(oracle_scores(oracle_predict, genome, part.chrom, part.rows[i], rc))
    assert len(ours) == (4 if rc else 7)
    ours_a, want_a = np.stack(ours), np.stack(want)
    for k, name in enumerate(SCORES):
        _assert_close(ours_a[:, k], want_a[:, k], name)


# --- end to end on Ray ----------------------------------------------------------------------------


def read_table(out) -> dict:
    return duckdb.sql(
        f"select * from read_parquet('{out}/*/*.parquet', hive_partitioning=true) order by chrom, pos, alt"
    ).fetchnumpy()


@pytest.fixture(scope="module")
def scored(ray_cluster, vcf_path, test_fasta, tmp_path_factory):
    out = tmp_path_factory.mktemp("variants") / "scores"
    config = VariantConfig(vcf=vcf_path, fasta=test_fasta, out=str(out), scores=("sad", "center"),
                           variants_per_part=3, threads_per_worker=1, progress=False)
    return config, score_variants(config)


def test_every_row_lands_once_with_its_status_and_validates(scored, vcf_path, test_fasta):
    config, summary = scored
    rows = read_table(config.out)
    by_id: dict = {}
    for vid, status in zip(np.ma.asarray(rows["id"]).tolist(), rows["status"]):  # masked (null) ids → None
        by_id.setdefault(vid, []).append(str(status))
    assert {k: sorted(v) for k, v in by_id.items()} == {k: sorted(v) for k, v in EXPECTED_STATUS.items()}
    assert set(rows["chrom"]) == {"chrA", "chrB", "chrQ", "contig_s"}  # 'B' rows under the FASTA's name
    scored_rows = np.isin(rows["status"], ["ok", "n_at_variant"])
    sad = np.ma.asarray(rows["sad:DEMO0000001"])
    assert not np.ma.getmaskarray(sad)[scored_rows].any() and np.ma.getmaskarray(sad)[~scored_rows].all()
    assert summary.units == summary.rows == 13 and summary.counts["ok"] == 8
    assert summary.sequences == 8 + 9  # one reference per distinct position (rs1's two ALTs share one)
    assert any("B→chrB" in note for note in summary.notes)
    report = validate(config.out, fasta=test_fasta, vcf=vcf_path)
    assert report.ok, report.table()
    manifest = json.loads(open(os.path.join(config.out, "_manifest.json")).read())
    assert manifest["identity"]["mode"] == "variants" and manifest["status"] == "complete"


def test_scores_on_ray_equal_the_direct_computation(scored, vcf_path, test_fasta):
    """The engine adds nothing to the numbers: the Ray run's scores equal the mode run in-process."""
    from enformer_batch.genome import FastaSource

    config, _ = scored
    rows = read_table(config.out)
    torch.set_num_threads(1)
    predictor = Predictor(InferenceSettings())
    mode = VariantMode(FastaSource(test_fasta), INPUT, ("sad", "center"))
    for part in _parts(vcf_path, test_fasta):
        result = mode.infer(predictor, part, mode.read(part))
        for j, i in enumerate(result.rows):
            row = part.rows[i]
            hit = (rows["chrom"] == part.chrom) & (rows["pos"] == row.pos) & (rows["alt"] == row.alt)
            got = np.ma.asarray(rows["center:DEMO0000003"])[hit].compressed()
            np.testing.assert_allclose(got, result.scores[j, 1, 2], rtol=1e-5, atol=1e-7)


def test_rerun_resumes_everything_and_another_vcf_is_detected(scored, vcf_path, test_fasta, tmp_path):
    config, _ = scored
    again = score_variants(config)
    assert again.units_computed == 0 and again.resumed_parts == again.parts
    other = tmp_path / "other.vcf"
    other.write_text(open(vcf_path).read().replace("rs2", "rs2b"))
    report = validate(config.out, vcf=str(other))
    assert not report.ok and any("content hash" in p for p in report.problems)
    assert any("missing" in p and "row(s)" in p for p in report.problems)


def test_group_bp_shares_one_reference_across_nearby_variants(ray_cluster, test_fasta, genome, tmp_path):
    """A dense VCF: with --group-bp the cluster shares one window centred on its middle, each SNV at its own
    offset; model inputs per variant fall from 2 to 1 + 1/n, and scores are those of that shared window."""
    a = genome["chrA"]
    positions = range(10_001, 10_501, 100)  # 5 SNVs, 100 bp apart: one cluster at --group-bp 1000
    vcf = tmp_path / "dense.vcf"
    vcf.write_text(HEADER + "".join(f"chrA\t{p}\t.\t{a[p - 1]}\t{_other(a[p - 1])}\t.\t.\t.\n" for p in positions))
    runs = {}
    for group_bp in (0, 1_000):
        out = tmp_path / f"g{group_bp}"
        summary = score_variants(VariantConfig(vcf=str(vcf), fasta=test_fasta, out=str(out), group_bp=group_bp,
                                               threads_per_worker=1, progress=False))
        runs[group_bp] = (summary, np.asarray(read_table(out)["sad:DEMO0000001"], float))
    assert runs[0][0].sequences == 10 and runs[1_000][0].sequences == 6
    # The grouped scores, recomputed from sequences written out by hand around the cluster's centre.
    centre = (10_000 + 10_400) // 2
    reference, _ = variant_sequences(a, centre + 1, "", "")
    torch.set_num_threads(1)
    predictor = Predictor(InferenceSettings(dtype="float32"))
    alts = []
    for p in positions:
        offset = INPUT // 2 + (p - 1 - centre)
        alts.append(reference[:offset] + _other(a[p - 1]) + reference[offset + 1 :])
    values, _ = predictor.predict(np.stack([encode(seq) for seq in [reference, *alts]]))
    want = (values[1:, :, 0].astype(np.float64) - values[0, :, 0]).sum(axis=1)
    np.testing.assert_allclose(runs[1_000][1], want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(runs[0][1], runs[1_000][1], rtol=1e-3)  # a deviation from exact centring, as documented


def test_strict_fails_on_a_ref_mismatch_before_computing(ray_cluster, vcf_path, test_fasta, tmp_path, capsys):
    out = tmp_path / "strict"
    code = main(["score-variants", vcf_path, "--fasta", test_fasta, "--out", str(out), "--strict", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "line 11: REF" in err[0] and "chrB:1000" in err[0] and "--strict" in err[0]
    assert not out.exists()


BAD_RUNS = [
    ("missing VCF", lambda t, v: str(t / "nope.vcf"), [], "VCF not found"),
    # Unreadable: a directory where the VCF should be (file modes do not stop root, which CI may be).
    ("unreadable VCF", lambda t, v: str(_mkdir(t / "calls.vcf")), [], "cannot read VCF"),
    ("VCF without a header", lambda t, v: _write(t, "chrA\t5\t.\tA\tG\n"), [], "not a VCF"),
    ("malformed line", lambda t, v: _write(t, HEADER + "chrA\t5\t.\tA\tG\nchrA\tx\t.\tA\tG\n"), [], "line 5"),
    ("unknown score", None, ["--scores", "sad,bogus"], "--scores"),
]


def _mkdir(path):
    path.mkdir()
    return path


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "input.vcf"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("build, extra, needle", [c[1:] for c in BAD_RUNS], ids=[c[0] for c in BAD_RUNS])
def test_bad_input_gives_one_line(ray_cluster, vcf_path, test_fasta, tmp_path, capsys, build, extra, needle):
    vcf = build(tmp_path, vcf_path) if build else vcf_path
    out = tmp_path / "out"
    code = main(["score-variants", vcf, "--fasta", test_fasta, "--out", str(out), "--no-progress", *extra])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("enformer-batch: error: ") and needle in err[0], err
    assert not (out / "_SUCCESS").exists()


def test_an_empty_vcf_gives_an_empty_complete_table(ray_cluster, test_fasta, tmp_path, capsys):
    vcf = _write(tmp_path, HEADER)
    out = tmp_path / "empty"
    code = main(["score-variants", vcf, "--fasta", test_fasta, "--out", str(out), "--no-progress"])
    assert code == 0 and "done: 0 variants" in capsys.readouterr().out
    assert validate(str(out), vcf=vcf).ok


KILLED_DRIVER = """
import sys, ray
from enformer_batch import VariantConfig, score_variants
ray.init(address="local", num_cpus=2, object_store_memory=100 * 1024**2, include_dashboard=False, logging_level="ERROR")
score_variants(VariantConfig(vcf=sys.argv[1], fasta=sys.argv[2], out=sys.argv[3], scores=("sad", "center"),
                             variants_per_part=3, threads_per_worker=1, manifest_interval_s=0, progress=False))
"""


def test_a_killed_driver_resumes_to_the_uninterrupted_table(scored, vcf_path, test_fasta, tmp_path):
    """The uninterrupted table is the module's ``scored`` run, with the same configuration: the same parts and
    batches (which decide the last bits of fp32 scores), one thread per replica."""
    from .test_faults import assert_same_rows, kill_driver_after_commits

    out = tmp_path / "interrupted"
    interrupted = kill_driver_after_commits(KILLED_DRIVER, [vcf_path, test_fasta, str(out)], out)
    assert interrupted["status"] == "running" and not (out / "_SUCCESS").exists()
    kept = {p["path"]: p["sha256"] for p in interrupted["parts"]}
    assert not validate(str(out), vcf=vcf_path).ok

    config = dict(vcf=vcf_path, fasta=test_fasta, scores=("sad", "center"), variants_per_part=3,
                  threads_per_worker=1, progress=False)
    resumed = score_variants(VariantConfig(out=str(out), **config))
    assert resumed.resumed_parts >= len(kept) and resumed.units_computed < resumed.units
    assert validate(str(out), fasta=test_fasta, vcf=vcf_path).ok
    final = json.loads((out / "_manifest.json").read_text())
    assert all(p["sha256"] == kept[p["path"]] for p in final["parts"] if p["path"] in kept)
    straight, _ = scored
    assert straight == VariantConfig(out=straight.out, **config)
    assert_same_rows(read_table(out), read_table(straight.out))


# --- real data: GRCh37 chr20 and 1000 Genomes / Platypus VCFs from Debian packages -----------------


@pytest.fixture(scope="session")
def chr20(tmp_path_factory) -> dict[str, str]:
    """GRCh37 chromosome 20 as plain FASTA named ``chr20`` (the VCFs say ``20``), and the real VCFs' paths.

    ``make test`` fetches them (tools/fetch_real_data.sh, from Debian's registry); elsewhere the test runs the
    script itself and is skipped, saying why, only where no Debian registry can be reached.
    """
    import subprocess

    from .test_faults import REPO

    data = os.path.join(REPO, ".real-data")
    script = os.path.join(REPO, "tools", "fetch_real_data.sh")
    if not os.path.exists(os.path.join(data, "5.vcf.gz")):
        done = subprocess.run(["bash", script, data], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"real chr20 data unavailable: {done.stderr.strip()}")
    fasta = tmp_path_factory.mktemp("chr20") / "chr20.fa"
    with gzip.open(os.path.join(data, "20.fa.gz"), "rb") as src, open(fasta, "wb") as dst:
        header = src.readline()
        assert header.split()[0] == b">20"
        dst.write(b">chr20\n")
        while chunk := src.read(1 << 22):
            dst.write(chunk)
    return {"fasta": str(fasta), **{name: os.path.join(data, f"{name}.vcf.gz") for name in ("4", "5", "24")}}


def _head(vcf_gz: str, records: int, out) -> str:
    """The header and the first ``records`` records of a real VCF, gzipped again (a real file, cut short)."""
    lines, kept = [], 0
    with gzip.open(vcf_gz, "rt") as f:
        for line in f:
            if not line.startswith("#"):
                if kept == records:
                    break
                kept += 1
            lines.append(line)
    with gzip.open(out, "wt") as f:
        f.writelines(lines)
    return str(out)


def test_real_indels_on_real_chr20_end_to_end(ray_cluster, chr20, tmp_path):
    """Platypus indel calls (multi-allelic included) on GRCh37 chr20: every REF matches, every row is scored
    and lands once; the README's DuckDB recipes run on the result."""
    vcf = _head(chr20["5"], 8, tmp_path / "indels.vcf.gz")
    out = tmp_path / "scores"
    summary = score_variants(VariantConfig(vcf=vcf, fasta=chr20["fasta"], out=str(out), scores=("sad", "logsad"),
                                           variants_per_part=4, threads_per_worker=1, progress=False))
    assert summary.counts == {"ok": 9}  # 8 records, one with two ALTs
    assert "scored: 9 of 9 rows" in str(summary)
    assert any("20→chr20" in note for note in summary.notes)
    assert validate(str(out), fasta=chr20["fasta"], vcf=vcf).ok
    top, widest = readme_recipes(out, track="DEMO0000009")
    assert len(top) == 9 and {row[0] for row in top} == {"chr20"}
    assert [abs(r[-1]) for r in top] == sorted((abs(r[-1]) for r in top), reverse=True)
    assert len(widest) == 9 and widest[0][-1] >= widest[-1][-1] and widest[0][-2].startswith("sad:")


def readme_recipes(out, track: str) -> list[list[tuple]]:
    """Run the README's score-variants DuckDB recipes on ``out``, as a user would paste them."""
    from .test_faults import REPO

    readme = open(os.path.join(REPO, "README.md")).read()
    block = readme.split("Recipes (DuckDB)", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    statements = [q for q in block.replace("scores/", f"{out}/").replace("CNhs11250", track).split(";") if q.strip()]
    assert len(statements) == 2
    return [duckdb.sql(q).fetchall() for q in statements]


def test_real_swapped_alleles_are_reported_as_mismatches(chr20, tmp_path):
    """24.vcf.gz often has REF and ALT swapped: each row's status equals a direct look at the FASTA."""
    import pyfaidx

    from enformer_batch.genome import FastaSource

    vcf = _head(chr20["24"], 40, tmp_path / "swapped.vcf.gz")
    lengths = FastaSource(chr20["fasta"]).lengths()
    parts = _stream(vcf, lengths, 100)
    genome = pyfaidx.Fasta(chr20["fasta"], as_raw=True)
    statuses, expected = [], []
    for part in parts:
        inputs = read_variant_inputs(FastaSource(chr20["fasta"]), part.chrom, part.length, part.rows, INPUT, 0)
        statuses += inputs.statuses
        expected += ["ok" if genome["chr20"][r.pos - 1 : r.pos - 1 + len(r.ref)].upper() == r.ref.upper()
                     else "ref_mismatch" for r in part.rows]
    assert statuses == expected and 0 < expected.count("ref_mismatch") < len(expected)
