"""The command line: bad input gives one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from enformer_batch.cli import main
from enformer_batch.demo import write_fasta


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


@pytest.fixture()
def bed(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / "r.bed"
        path.write_text(text)
        return str(path)

    return write


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--stride", "1000"], ["--stride 1000", "multiple of 128"]),
        (["--stride", str(896 * 128 + 128)], ["--stride", "output span"]),
        (["--chroms", "chrA,chr99"], ["'chr99'", "not in the FASTA"]),
        (["--batch-size", "0"], ["--batch-size"]),
    ],
)
def test_bad_options(capsys, test_fasta, tmp_path, extra, needles):
    code, _, err = run_cli(capsys, "predict", test_fasta, "--out", str(tmp_path / "o"), *extra)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "o" / "_SUCCESS").exists()


@pytest.mark.parametrize(
    "bed_text, needles",
    [
        ("chr99\t0\t100\n", ["chromosome 'chr99' is not in the FASTA", "line 1"]),
        ("chrB\t0\t130001\n", ["past the end of chrB", "130000"]),
        ("chrB\t10\t100\nchrB\t500\t400\n", ["line 2", "start < end"]),
        ("chrB\tten\t100\n", ["integers"]),
    ],
)
def test_bad_bed(capsys, test_fasta, tmp_path, bed, bed_text, needles):
    code, _, err = run_cli(capsys, "predict", test_fasta, "--out", str(tmp_path / "o"), "--regions", bed(bed_text))
    assert_one_line_error(code, err, *needles)


def test_missing_and_empty_fasta(capsys, tmp_path):
    code, _, err = run_cli(capsys, "predict", str(tmp_path / "nope.fa"), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "FASTA not found", "nope.fa")
    empty = tmp_path / "empty.fa"
    empty.write_bytes(b"")
    code, _, err = run_cli(capsys, "predict", str(empty), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "empty")


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
