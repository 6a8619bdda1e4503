"""Genomes as users download them: plain FASTA, bgzip (+ .fai/.gzi), plain gzip and UCSC .2bit.

The same genome in every form must read the same bases, record the same run identity and give the same
atlas; damaged files fail with one line that says what is wrong.
"""

from __future__ import annotations

import gzip
import json
import os
import zipfile

import fsspec
import pytest

from enformer_batch.cli import main
from enformer_batch.demo import DEMO_GENOME, chrom_sequence, compress_fasta, write_demo_genome, write_twobit
from enformer_batch.genome import FastaSource, GenomeError, read_codes, sniff_form

from .conftest import TEST_GENOME, run_and_validate

FORMS = ("bgzip", "gzip", "2bit")


def write_form(fasta: str, folder, form: str) -> str:
    """The test genome (``fasta``, seed 7) written as ``form`` under ``folder``, named as users name them."""
    os.makedirs(folder, exist_ok=True)
    if form == "2bit":
        return write_twobit(str(folder / "test.2bit"), [(c.name, chrom_sequence(c, 7)) for c in TEST_GENOME])
    return compress_fasta(fasta, str(folder / "test.fa.gz"), form)


@pytest.fixture(autouse=True)
def genome_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ENFORMER_BATCH_CACHE", str(cache))
    return cache


def test_forms_are_told_by_content_and_share_the_genome_name(test_fasta, tmp_path):
    paths = {form: write_form(test_fasta, tmp_path / form, form) for form in FORMS}
    paths["fasta"] = test_fasta
    for form, path in paths.items():
        with open(path, "rb") as f:
            assert sniff_form(f.read(16)) == form
        assert FastaSource(path).form == form
        assert FastaSource(path).name == "test"  # test.fa, test.fa.gz, test.2bit: one genome
    assert FastaSource("s3://b/GRCh38.primary_assembly.genome.fa.gz").name == "GRCh38.primary_assembly.genome"
    assert FastaSource("/x/hg38.analysisSet.2bit").name == "hg38.analysisSet"


@pytest.mark.parametrize("where", ["local", "url"])
def test_every_form_reads_the_same_bases(test_fasta, tmp_path, genome_cache, capsys, where):
    reference = FastaSource(test_fasta)
    lengths = reference.lengths()
    ref = reference.open()
    # Whole chromosomes plus padding on both sides: N runs, soft-masked stretches and IUPAC codes included.
    expected = {c: read_codes(ref, c, n, -1000, n + 1000) for c, n in lengths.items()}
    for form in FORMS:
        path = write_form(test_fasta, tmp_path / form, form)
        url = path
        if where == "url":
            url = f"memory://genomes-{form}/{os.path.basename(path)}"
            fsspec.filesystem("memory").pipe(url, open(path, "rb").read())
        source = FastaSource(url)
        assert source.lengths() == lengths, form
        genome = source.open()
        try:
            for chrom, n in lengths.items():
                assert (read_codes(genome, chrom, n, -1000, n + 1000) == expected[chrom]).all(), (form, chrom)
        finally:
            genome.close()
    fs = fsspec.filesystem("memory")
    if where == "url":  # a bgzip URL gets its indexes beside it; the others are copied into the cache once
        assert fs.exists("/genomes-bgzip/test.fa.gz.fai") and fs.exists("/genomes-bgzip/test.fa.gz.gzi")
        assert len(os.listdir(genome_cache / "genomes")) == 2  # the decompressed gzip, the copied 2bit
    else:
        assert os.path.exists(tmp_path / "bgzip" / "test.fa.gz.gzi")
        assert len(os.listdir(genome_cache / "genomes")) == 1  # the decompressed gzip only
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if "plain gzip" in line]
    assert len(notices) == 1 and "decompressing it once" in notices[0]  # one notice, not one per open


def test_the_demo_genome_reads_the_same_in_every_form(tmp_path):
    """The demo genome (2 Mb, what `make demo` predicts) as bgzip, plain gzip and 2bit: every base of it."""
    fasta = write_demo_genome(str(tmp_path / "demo.fa"))
    forms = {"bgzip": compress_fasta(fasta, str(tmp_path / "demo.fa.gz"), "bgzip"),
             "gzip": compress_fasta(fasta, str(tmp_path / "demo.plain.fa.gz"), "gzip"),
             "2bit": write_twobit(str(tmp_path / "demo.2bit"), [(c.name, chrom_sequence(c, 7)) for c in DEMO_GENOME])}
    ref = FastaSource(fasta).open()
    lengths = FastaSource(fasta).lengths()
    for form, path in forms.items():
        source = FastaSource(path)
        assert source.form == form and source.lengths() == lengths
        genome = source.open()
        for chrom, n in lengths.items():
            assert (read_codes(genome, chrom, n, 0, n) == read_codes(ref, chrom, n, 0, n)).all(), (form, chrom)
        genome.close()


def test_four_forms_give_identical_atlases(ray_cluster, test_fasta, reference_atlas, tmp_path, capsys):
    """The reference atlas (plain FASTA) against bgzip, plain gzip and 2bit runs, read back with DuckDB."""
    import duckdb

    settings = dict(dtype="float32", batch_size=2, threads_per_worker=1)
    outs = {"fasta": str(reference_atlas)}
    for form in ("bgzip", "2bit"):
        outs[form] = str(tmp_path / f"atlas-{form}")
        run_and_validate(write_form(test_fasta, tmp_path / form, form), outs[form], **settings)
    # The plain-gzip run goes through the command line with progress on: the user sees each start-up stage.
    outs["gzip"] = str(tmp_path / "atlas-gzip")
    gz = write_form(test_fasta, tmp_path / "gzip", "gzip")
    assert main(["predict", gz, "--out", outs["gzip"], "--dtype", "float32", "--batch-size", "2",
                 "--threads-per-worker", "1"]) == 0
    err = capsys.readouterr().err
    # (The session cluster has two fake GPUs, so two replicas start.)
    # A new run starts its replicas at once and plans with the first one's description of the model.
    stages = ["reading the genome index", "plain gzip", "starting 2 model replica(s)", "each loads the model (demo)",
              "replica 1/2 ready", "replica 2/2 ready"]
    positions = [next((i for i, line in enumerate(err.splitlines()) if s in line), -1) for s in stages]
    assert -1 not in positions and positions == sorted(positions), err
    assert main(["validate", outs["gzip"], "--fasta", gz]) == 0

    manifests = {form: json.load(open(os.path.join(out, "_manifest.json"))) for form, out in outs.items()}
    for form in FORMS:  # same identity, so each could resume the others' runs
        assert manifests[form]["identity"] == manifests["fasta"]["identity"], form
        assert manifests[form]["run"] == manifests["fasta"]["run"]

    def rows(out: str) -> str:
        return f"read_parquet('{out}/*/*.parquet', hive_partitioning=true)"

    def count(query: str) -> int:
        return duckdb.sql(f"select count(*) from ({query})").fetchall()[0][0]

    n = count(f"select * from {rows(outs['fasta'])}")
    assert n == sum(-(-c.length // 128) for c in TEST_GENOME)
    for form in FORMS:
        a, b = rows(outs["fasta"]), rows(outs[form])
        # EXCEPT ALL compares every column (chrom, start, end, each track; nulls equal) row by row as a bag.
        assert count(f"select * from {a} except all select * from {b}") == 0, form
        assert count(f"select * from {b} except all select * from {a}") == 0, form
        assert count(f"select * from {b}") == n


def _truncated(path: str, keep: float) -> str:
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    return path


def _garbage_2bit(path: str) -> str:
    data = bytearray(open(path, "rb").read())
    data[16:40] = b"\xff" * 24  # the sequence index: offsets now point far past the end
    open(path, "wb").write(bytes(data))
    return path


DAMAGED = [
    ("truncated plain gzip", "gzip", lambda p: _truncated(p, 0.6), ["truncated or corrupt", "download it again"]),
    ("truncated bgzip", "bgzip", lambda p: _truncated(p, 0.6), ["bgzip", "truncated or corrupt"]),
    ("truncated 2bit", "2bit", lambda p: _truncated(p, 0.6), ["2bit", "truncated file"]),
    ("2bit with a garbled index", "2bit", _garbage_2bit, ["2bit", "past the end of the file"]),
    ("2bit of an unknown version", "2bit", lambda p: open(p, "r+b").write(b"\x43\x27\x41\x1a\x07") and p,
     ["2bit version"]),
]


@pytest.mark.parametrize("case, form, damage, needles", DAMAGED, ids=[c[0] for c in DAMAGED])
def test_damaged_genome_fails_with_one_clear_line(ray_cluster, test_fasta, tmp_path, capsys, case, form, damage,
                                                 needles):
    path = write_form(test_fasta, tmp_path / form, form)
    damage(path)
    code = main(["predict", path, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("enformer-batch: error: ")]
    others = [line for line in err.splitlines() if line.strip() and line not in errors]
    assert len(errors) == 1, err
    assert all("decompressing it once" in line for line in others), err  # at most the gzip notice
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not os.path.exists(tmp_path / "out" / "_SUCCESS")


def test_misnamed_files_are_explained(test_fasta, tmp_path):
    bgzip_as_fa = tmp_path / "bgzip.fa"
    os.replace(write_form(test_fasta, tmp_path / "b", "bgzip"), bgzip_as_fa)
    with pytest.raises(GenomeError, match="bgzip-compressed but its name does not end in .gz"):
        FastaSource(str(bgzip_as_fa)).lengths()
    fasta_as_gz = tmp_path / "plain.fa.gz"
    fasta_as_gz.write_bytes(b">c\nACGT\n")
    with pytest.raises(GenomeError, match="not compressed"):
        FastaSource(str(fasta_as_gz)).lengths()
    # A plain gzip needs no particular name: it is recognised by its bytes and decompressed.
    plain = tmp_path / "genome.fasta"
    plain.write_bytes(gzip.compress(b">c\nACGTN\n"))
    assert FastaSource(str(plain)).lengths() == {"c": 5}


def test_bgzip_without_gzi_in_a_read_only_place_is_explained(test_fasta, tmp_path):
    bgz = write_form(test_fasta, tmp_path / "b", "bgzip")
    archive = tmp_path / "genome.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(bgz, "test.fa.gz")
    with pytest.raises(GenomeError, match=r"no index \(.fai/.gzi\).*samtools faidx"):
        FastaSource(f"zip://test.fa.gz::{archive}").lengths()


def test_no_free_space_for_a_plain_gzip_is_refused_before_writing(test_fasta, tmp_path, genome_cache, monkeypatch):
    import shutil
    from collections import namedtuple

    gz = write_form(test_fasta, tmp_path / "g", "gzip")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(GenomeError, match=r"needs about \d+\.\d kB .* only 1\.0 kB is free.*bgzip"):
        FastaSource(gz).lengths()
    assert not any(f.endswith(".fa") for _, _, files in os.walk(genome_cache) for f in files)
