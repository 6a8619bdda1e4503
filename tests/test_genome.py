"""FASTA access and encoding: names and lengths as in the FASTA, padding, case, IUPAC, fsspec sources."""

from __future__ import annotations

import os

import fsspec
import pytest

from enformer_batch.demo import DEMO_GENOME, write_demo_genome, write_fasta
from enformer_batch.genome import N_CODE, FastaSource, GenomeError, encode, onehot_table, read_codes


def test_encoding_is_case_insensitive_and_maps_everything_else_to_n():
    assert encode("ACGTacgt").tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert set(encode("NRYKMSWBDHVnry-.").tolist()) == {N_CODE}
    zeros, uniform = onehot_table("zeros"), onehot_table("uniform")
    assert zeros[encode("ACGTN")].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert uniform[N_CODE].tolist() == [0.25] * 4
    with pytest.raises(ValueError):
        onehot_table("ones")


def test_read_codes_pads_outside_the_chromosome(tmp_path):
    path = write_fasta(str(tmp_path / "g.fa"), [("c 1", b"ACGTacgtNR")])
    source = FastaSource(path)
    assert source.lengths() == {"c": 10}  # pyfaidx keeps the name up to the first whitespace
    fasta = source.open()
    assert read_codes(fasta, "c", 10, -3, 13).tolist() == [4, 4, 4, 0, 1, 2, 3, 0, 1, 2, 3, 4, 4, 4, 4, 4]
    assert read_codes(fasta, "c", 10, 20, 24).tolist() == [4] * 4


def test_names_and_order_are_kept_and_the_index_is_built(tmp_path):
    path = write_fasta(str(tmp_path / "g.fa"), [("chr10", b"A" * 5), ("HLA-A*01:01", b"C" * 7), ("1", b"G")])
    assert not os.path.exists(path + ".fai")
    assert FastaSource(path).lengths() == {"chr10": 5, "HLA-A*01:01": 7, "1": 1}
    assert os.path.exists(path + ".fai")


def test_demo_genome_is_deterministic_and_has_the_promised_features(tmp_path):
    a = write_demo_genome(str(tmp_path / "a.fa"))
    b = write_demo_genome(str(tmp_path / "b.fa"))
    assert open(a, "rb").read() == open(b, "rb").read()
    lengths = FastaSource(a).lengths()
    assert lengths == {c.name: c.length for c in DEMO_GENOME}
    assert all(100_000 <= n <= 1_500_000 for n in list(lengths.values())[:-1])
    assert min(lengths.values()) < 196_608  # a contig shorter than one window
    text = open(a).read()
    assert any(c.islower() for c in text) and "NNNNNNNN" in text and any(c in text for c in "RYKMSW")


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"just text\n", "cannot index FASTA .*before the first sequence"),
        (b">a\nACGT\n>a\nACGT\n", "duplicate"),
    ],
)
def test_bad_fasta_gives_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.fa"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GenomeError, match=message):
        FastaSource(str(path)).lengths()


def test_missing_index_in_a_read_only_place_is_explained(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere; covered by the fsspec case below")
    path = write_fasta(str(tmp_path / "g.fa"), [("c", b"ACGT")])
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(GenomeError, match="samtools faidx"):
            FastaSource(path).lengths()
    finally:
        os.chmod(tmp_path, 0o755)


def test_fasta_from_an_fsspec_url(tmp_path):
    data = b">c1\nACGTNNacgt\n>c2\nTTTT\n"
    with fsspec.open("memory://genomes/g.fa", "wb") as f:
        f.write(data)
    source = FastaSource("memory://genomes/g.fa")
    assert source.lengths() == {"c1": 10, "c2": 4}
    assert fsspec.filesystem("memory").exists("/genomes/g.fa.fai")  # built beside it
    fasta = source.open()
    assert read_codes(fasta, "c1", 10, 0, 10).tolist() == [0, 1, 2, 3, 4, 4, 0, 1, 2, 3]
    with pytest.raises(GenomeError, match="not found"):
        FastaSource("memory://genomes/missing.fa").lengths()
