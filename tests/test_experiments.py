"""In-silico experiments: saturation mutagenesis and sequence edits, against enformer-pytorch on independently
built sequences, end to end on Ray (edges, N, resume after kill -9), bad input and plots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from enformer_batch import validate
from enformer_batch.cli import main
from enformer_batch.genome import FastaSource
from enformer_batch.inference import InferenceSettings, Predictor
from enformer_batch.kinds.edits import EditMode, EditPart, EditsConfig, edits, read_edits
from enformer_batch.kinds.mutagenesis import (
    MutagenesisConfig,
    MutagenesisMode,
    mutagenesis,
    mutagenesis_parts,
    parse_regions,
)
from enformer_batch.kinds.scoring import SCORES

from .reference import INPUT, onehot, parse_fasta, variant_sequences
from .test_faults import assert_same_rows, kill_driver_after_commits

EDITS = "# name chrom start end sequence\ndel100\tchrA\t1000\t1100\t\nins8\tchrA\t2000\t2000\tACGTACGT\n" \
        "swap\tchrB\t100\t110\tGGGGGGGGGG\n"


@pytest.fixture(scope="module")
def genome(test_fasta) -> dict[str, str]:
    return parse_fasta(test_fasta)


@pytest.fixture(scope="module")
def edits_tsv(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("edits") / "edits.tsv"
    path.write_text(EDITS)
    return str(path)


def oracle_of(model, ref_seq: str, alt_seq: str, done: dict | None = None) -> np.ndarray:
    """The four scores from enformer-pytorch's predictions of two independently built sequences (float64);
    ``done`` keeps predictions by sequence, so mutants sharing a reference run it once."""
    done = {} if done is None else done

    def predict(seq: str) -> np.ndarray:
        if seq not in done:
            with torch.no_grad():
                done[seq] = model(torch.from_numpy(onehot(seq))[None], head="human").double().numpy()[0]
        return done[seq]

    r, a = predict(ref_seq), predict(alt_seq)
    return np.stack([(a - r).sum(0), np.log2(a.sum(0) + 1) - np.log2(r.sum(0) + 1),
                     np.sqrt(((a - r) ** 2).sum(0)), (a - r)[448]])


def test_mutants_and_edits_equal_enformer_pytorch(oracle_model, test_fasta, genome, edits_tsv):
    source = FastaSource(test_fasta)
    lengths = source.lengths()
    predictor = Predictor(InferenceSettings(batch_size=4))
    ours, want = [], []
    # Mutagenesis: chrA:[999, 1001), one shared window centred on 1000; each mutant at its own offset.
    (part,) = mutagenesis_parts(parse_regions("chrA:999-1001", lengths), lengths, 256)
    labels, result = MutagenesisMode(source, INPUT, SCORES).infer(predictor, part, MutagenesisMode(
        source, INPUT, SCORES).read(part))
    assert result.sequences == 1 + 6  # one reference for the six mutants
    reference, _ = variant_sequences(genome["chrA"], 1000 + 1, "", "")
    references: dict = {}
    for j, (pos, alt) in enumerate(zip(labels.pos, labels.alt)):
        offset = INPUT // 2 + (pos - 1) - 1000
        assert reference[offset] == labels.ref[j] != alt
        ours.append(result.scores[j])
        want.append(oracle_of(oracle_model, reference, reference[:offset] + alt + reference[offset + 1:], references))
    # Edits: a 100-bp deletion, an 8-bp insertion, a 10-bp replacement; each centred on its start.
    all_edits = read_edits(edits_tsv, lengths)
    for edit in all_edits:
        part = EditPart(edit.chrom, 0, 1, lengths[edit.chrom], (edit,))
        mode = EditMode(source, INPUT, SCORES)
        result = mode.infer(predictor, part, mode.read(part))
        seq = genome[edit.chrom]
        ref_seq, alt_seq = variant_sequences(seq, edit.start + 1, seq[edit.start : edit.end], edit.sequence)
        ours.append(result.scores[0])
        want.append(oracle_of(oracle_model, ref_seq, alt_seq))
    ours_a, want_a = np.stack(ours), np.stack(want)
    for k in range(len(SCORES)):
        scale = np.abs(want_a[:, k]).max(axis=0)
        assert (np.abs(ours_a[:, k] - want_a[:, k]).max(axis=0) / scale).max() <= 1e-4, SCORES[k]


def png_is_drawn(path: str, width: int) -> None:
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[1] == width
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20  # not blank


def test_regions_at_an_edge_and_over_n_end_to_end_with_heat_map(ray_cluster, test_fasta, tmp_path, capsys):
    bed = tmp_path / "regions.bed"
    bed.write_text("chrB\t0\t12\nchrB\t4995\t5005\n")  # the chromosome's first bases; a run into N at 5000
    out = tmp_path / "mutagenesis"
    code = main(["mutagenesis", test_fasta, str(bed), "--out", str(out), "--scores", "sad,center",
                 "--no-progress", "--threads-per-worker", "1"])
    text = capsys.readouterr().out
    assert code == 0 and "done: 66 mutants" in text and "model inputs per mutant: 1.02" in text
    report = validate(str(out), fasta=test_fasta)
    assert report.ok, report.table()
    import duckdb

    rows = duckdb.sql(f"select region, pos, ref, alt, status, \"sad:DEMO0000001\" as sad from "
                      f"read_parquet('{out}/*/*.parquet') order by region, pos, alt").fetchall()
    edge = [r for r in rows if r[0] == "chrB:0-12"]
    assert len(edge) == 36 and {r[1] for r in edge} == set(range(1, 13)) and all(r[4] == "ok" for r in edge)
    n_run = [r for r in rows if r[0] == "chrB:4995-5005"]
    assert [r[4] for r in n_run].count("n_at_variant") == 5 * 4  # positions 5001-5005 are N: all four bases
    assert {r[1] for r in n_run if r[2] == "N"} == set(range(5001, 5006)) and len(n_run) == 5 * 3 + 5 * 4
    assert all(r[5] is not None for r in rows)
    png = str(tmp_path / "heat.png")
    assert main(["plot-mutagenesis", str(out), "--region", "chrB:4995-5005", "--track", "DEMO0000001",
                 "--score", "center", "--out", png, "--width", "800"]) == 0
    png_is_drawn(png, 800)


def test_edits_end_to_end_with_plot(ray_cluster, test_fasta, edits_tsv, tmp_path, capsys):
    out = tmp_path / "edits"
    summary = edits(EditsConfig(fasta=test_fasta, edits=edits_tsv, out=str(out), scores=("sad", "l2"),
                                edits_per_part=2, threads_per_worker=1, progress=False))
    assert summary.units == 3 and summary.counts == {"ok": 3} and summary.sequences == 6
    assert validate(str(out)).ok
    import duckdb

    rows = duckdb.sql(f"select chrom, name, start, \"end\", sequence from read_parquet('{out}/*/*.parquet', "
                      "hive_partitioning=true) order by name").fetchall()
    assert rows == [("chrA", "del100", 1000, 1100, ""), ("chrA", "ins8", 2000, 2000, "ACGTACGT"),
                    ("chrB", "swap", 100, 110, "GGGGGGGGGG")]
    png = str(tmp_path / "edit.png")
    assert main(["plot-edit", test_fasta, edits_tsv, "--name", "del100", "--tracks", "0,8", "--out", png,
                 "--width", "700"]) == 0
    png_is_drawn(png, 700)


BAD = [
    (["mutagenesis", "{fasta}", "chrB:129990-130010"], "past the end of chrB"),
    (["mutagenesis", "{fasta}", "chrA:0-10001"], "at most 10,000 bp"),
    (["mutagenesis", "{fasta}", "chrZ:0-10"], "'chrZ' is not in the FASTA"),
    (["mutagenesis", "{fasta}", "{bed}"], "regions.bed line 2: chromosome 'chrZ'"),
    (["edits", "{fasta}", "{tsv:x\tchrA\t10\t5\tA}"], "line 1: needs 0 <= start <= end"),
    (["edits", "{fasta}", "{tsv:x\tchrA\t10\tA\tACGT}"], "line 1: start and end must be integers"),
    # Four fields is not a deletion (that ends in a tab: an empty fifth field): issue #22, item 10.
    (["edits", "{fasta}", "{tsv:x\tchrA\t10\t20}"], "line 1: expected 5 tab-separated fields"),
    (["edits", "{fasta}", "{tsv:# c\nx\tchrA\t10\t20\tAXA}"], "line 2: the sequence must be bases"),
    (["edits", "{fasta}", "{tsv:x\tchrA\t10}"], "line 1: expected 5 tab-separated fields"),
    (["edits", "{fasta}", "{tsv:x\tchrQ\t10\t20\tA}"], "line 1: chromosome 'chrQ'"),
]


def test_an_edit_line_of_four_fields_is_an_error_naming_its_line_not_a_deletion(tmp_path):
    """A sequence lost from a line (or a trailing tab an editor stripped) must not silently delete [start, end)."""
    tsv = tmp_path / "edits.tsv"
    tsv.write_text("# name chrom start end sequence\ndel\tchrA\t10\t20\t\nlost\tchrA\t30\t40\n")
    with pytest.raises(ValueError, match=r"edits.tsv line 3: expected 5 tab-separated fields .*got 4"):
        read_edits(str(tsv), {"chrA": 1000})
    tsv.write_text("del\tchrA\t10\t20\t\n")
    (deletion,) = read_edits(str(tsv), {"chrA": 1000})
    assert (deletion.start, deletion.end, deletion.sequence) == (10, 20, "")


@pytest.mark.parametrize("argv, needle", BAD, ids=[f"{a[0]}-{n[:20]}" for a, n in BAD])
def test_bad_regions_and_edit_rows_give_one_line(ray_cluster, test_fasta, tmp_path, capsys, argv, needle):
    bed = tmp_path / "regions.bed"
    bed.write_text("chrA\t0\t10\nchrZ\t0\t10\n")
    args = []
    for a in argv:
        if a.startswith("{tsv:"):
            path = tmp_path / "edits.tsv"
            path.write_text(a[5:-1] + "\n")
            a = str(path)
        args.append(a.format(fasta=test_fasta, bed=bed))
    out = tmp_path / "out"
    code = main([*args, "--out", str(out), "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("enformer-batch: error: ") and needle in err[0], err
    assert not (out / "_SUCCESS").exists()


KILLED = """
import sys, ray
from enformer_batch.kinds.mutagenesis import MutagenesisConfig, mutagenesis
ray.init(address="local", num_cpus=2, object_store_memory=100 * 1024**2, include_dashboard=False, logging_level="ERROR")
mutagenesis(MutagenesisConfig(fasta=sys.argv[1], regions="chrA:5000-5006", out=sys.argv[2], positions_per_part=1,
                              batch_size=1, threads_per_worker=1, manifest_interval_s=0, progress=False))
"""


def test_mutagenesis_resumes_after_kill_9_to_the_uninterrupted_table(ray_cluster, test_fasta, tmp_path):
    out = tmp_path / "interrupted"
    assert kill_driver_after_commits(KILLED, [test_fasta, str(out)], out)["status"] == "running"
    config = dict(fasta=test_fasta, regions="chrA:5000-5006", positions_per_part=1, batch_size=1,
                  threads_per_worker=1, progress=False)
    resumed = mutagenesis(MutagenesisConfig(out=str(out), **config))
    assert resumed.resumed_parts >= 2 and resumed.units_computed < resumed.units
    assert validate(str(out)).ok
    straight = tmp_path / "straight"
    mutagenesis(MutagenesisConfig(out=str(straight), **config))
    import duckdb

    def rows(path):
        return duckdb.sql(f"select * from read_parquet('{path}/*/*.parquet') order by pos, alt").fetchnumpy()

    assert_same_rows(rows(out), rows(straight))
