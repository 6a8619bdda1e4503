"""The command line: bad input gives one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from enformer_batch.cli import main
from enformer_batch.demo import write_fasta

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("enformer-batch: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _bed(tmp_path, text: str) -> str:
    path = tmp_path / "r.bed"
    path.write_text(text)
    return str(path)


def _fasta(tmp_path, content: bytes, name: str = "bad.fa") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def _read_only_fasta(tmp_path, fasta) -> str:
    """A FASTA without an index inside a zip archive: a place where no .fai can be written."""
    archive = tmp_path / "genome.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(fasta, "genome.fa")
    return f"zip://genome.fa::{archive}"


def _stale_index(tmp_path, fasta) -> str:
    from enformer_batch.genome import FastaSource

    FastaSource(fasta).lengths()  # make sure the original is indexed
    copy = tmp_path / "edited.fa"
    shutil.copy(fasta, copy)
    shutil.copy(fasta + ".fai", str(copy) + ".fai")
    with open(copy, "r+b") as f:  # the FASTA was edited after indexing: a few bases fewer on chrA
        data = f.read().replace(b"\n", b"", 3)
        f.seek(0)
        f.write(data)
        f.truncate()
    return str(copy)


def _misshapen_checkpoint(tmp_path, _fasta_path) -> str:
    model = tmp_path / "model"
    shutil.copytree(os.path.join(REPO, "enformer_batch", "demo_model"), model)
    config = json.loads((model / "config.json").read_text())
    config["output_heads"]["human"] += 1  # the weights have 12 human tracks, the config says 13
    (model / "config.json").write_text(json.dumps(config))
    return str(model)


# (case, FASTA or a builder of it, extra arguments (callables get tmp_path and the FASTA), words of the message)
BAD_INPUTS = [
    ("missing FASTA", lambda t, f: str(t / "nope.fa"), [], ["FASTA not found", "nope.fa"]),
    ("FASTA without .fai in a read-only place", _read_only_fasta, [], ["no index", "samtools faidx"]),
    (".fai that does not match its FASTA", _stale_index, [], ["does not match the FASTA", "delete the .fai"]),
    ("duplicate sequence names", lambda t, f: _fasta(t, b">a\nACGT\n>a\nACGT\n"), [], ["duplicate", "a"]),
    ("empty FASTA", lambda t, f: _fasta(t, b""), [], ["empty"]),
    ("stride not a multiple of 128", None, ["--stride", "1000"], ["--stride 1000", "multiple of 128"]),
    ("stride past the output span", None, ["--stride", str(896 * 128 + 128)], ["--stride", "output span"]),
    ("BED end before start", None, ["--regions", lambda t, f: _bed(t, "chrB\t10\t100\nchrB\t500\t400\n")],
     ["line 2", "start < end"]),
    ("BED past the chromosome end", None, ["--regions", lambda t, f: _bed(t, "chrB\t0\t130001\n")],
     ["past the end of chrB", "130000"]),
    ("BED with text coordinates", None, ["--regions", lambda t, f: _bed(t, "chrB\tten\t100\n")], ["integers"]),
    ("unknown chromosome in --chroms", None, ["--chroms", "chrA,chr99"], ["'chr99'", "not in the FASTA"]),
    ("unknown chromosome in BED", None, ["--regions", lambda t, f: _bed(t, "chr99\t0\t100\n")],
     ["'chr99' is not in the FASTA", "line 1"]),
    ("checkpoint with wrong shapes", None, ["--model", _misshapen_checkpoint], ["_heads.human", "shape"]),
    ("track selection matching nothing", None, ["--tracks", "^NOSUCH:"], ["NOSUCH", "matches no track"]),
    ("track index out of range", None, ["--tracks", "0,99"], ["99", "out of range", "12 tracks"]),
    ("batch size 0", None, ["--batch-size", "0"], ["--batch-size"]),
    ("unwritable --out", None, ["--out", lambda t, f: str(t / "a-file" / "atlas")], ["--out", "not writable"]),
]


@pytest.mark.parametrize("case, fasta_builder, extra, needles", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_one_line_naming_the_problem(capsys, ray_cluster, test_fasta, tmp_path, case,
                                                      fasta_builder, extra, needles):
    (tmp_path / "a-file").write_text("not a directory")
    fasta = fasta_builder(tmp_path, test_fasta) if fasta_builder else test_fasta
    args = [a(tmp_path, test_fasta) if callable(a) else a for a in extra]
    out = args[args.index("--out") + 1] if "--out" in args else str(tmp_path / "out")
    if "--out" not in args:
        args += ["--out", out]
    code, _, err = run_cli(capsys, "predict", fasta, *args, "--no-progress")
    assert_one_line_error(code, err, *needles)
    assert not os.path.exists(os.path.join(out, "_SUCCESS"))


def test_out_holding_another_run_is_refused_unless_overwrite(capsys, ray_cluster, tmp_path):
    fasta = write_fasta(str(tmp_path / "g.fa"), [("c1", b"ACGT" * 100)])
    out = str(tmp_path / "atlas")
    code, stdout, _ = run_cli(capsys, "predict", fasta, "--out", out, "--no-progress", "--tracks", "0-1")
    assert code == 0 and "atlas:" in stdout
    code, _, err = run_cli(capsys, "predict", fasta, "--out", out, "--no-progress", "--tracks", "0-2")
    assert_one_line_error(code, err, "another configuration", "tracks", "--overwrite")
    code, _, _ = run_cli(capsys, "predict", fasta, "--out", out, "--no-progress", "--tracks", "0-2", "--overwrite")
    assert code == 0
    code, out_text, _ = run_cli(capsys, "validate", out, "--fasta", fasta)
    assert code == 0 and "OK" in out_text


def test_the_installed_command_reports_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "enformer_batch.cli", "predict", str(tmp_path / "missing.fa"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"enformer-batch: error: FASTA not found: {tmp_path}/missing.fa"]
    debug = subprocess.run(
        [sys.executable, "-m", "enformer_batch.cli", "--debug", "predict", str(tmp_path / "missing.fa"),
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--model", "--tracks", "--stride", "--regions", "--chroms", "--batch-size",
                   "--precision", "--dtype", "--rc", "--shifts", "--n-encoding", "--workers",
                   "--gpus-per-worker", "--overwrite"):
        assert option in text


def test_debug_works_before_or_after_the_command(tmp_path, capsys):
    from enformer_batch.genome import GenomeError

    missing = str(tmp_path / "missing.fa")
    code, _, err = run_cli(capsys, "predict", missing, "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "FASTA not found")
    for argv in (["--debug", "predict", missing, "--out", str(tmp_path / "o")],
                 ["predict", missing, "--out", str(tmp_path / "o"), "--debug"],
                 ["predict", "--debug", missing, "--out", str(tmp_path / "o")],
                 ["plan", missing, "--debug"]):
        with pytest.raises(GenomeError, match="FASTA not found"):  # --debug: the exception itself
            main(argv)


def test_tracks_takes_storage_options(tmp_path, capsys, monkeypatch):
    """`dir://` needs its root as a storage option: the listing works only when the option reaches fsspec."""
    monkeypatch.setenv("ENFORMER_BATCH_CACHE", str(tmp_path / "cache"))
    root = os.path.join(REPO, "enformer_batch")
    code, _, err = run_cli(capsys, "tracks", "dir://demo_model")
    assert code != 0 and err.startswith("enformer-batch: error: ")
    code, out, _ = run_cli(capsys, "tracks", "dir://demo_model", "--storage-option", f"path={root}")
    assert code == 0 and "head human: 12 tracks" in out and "DEMO0000012" in out
