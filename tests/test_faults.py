"""Exactly once under faults: killed replicas, a killed driver, damaged parts, failing windows."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from enformer_batch import PredictConfig, predict, validate
from enformer_batch.demo import DemoChrom, write_demo_genome
from enformer_batch.engine import WORKER_NAME_PREFIX, RunError

from .conftest import TEST_GENOME, read_atlas, run_and_validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_same_rows(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        left, right = np.ma.asarray(a[key]), np.ma.asarray(b[key])
        assert np.array_equal(np.ma.getmaskarray(left), np.ma.getmaskarray(right)), key
        assert np.array_equal(left.compressed(), right.compressed()), key


def part_files(out) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(d, f), out): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(out)
        for f in files
        if f.endswith(".parquet")
    }


def test_a_replica_killed_mid_run_loses_and_duplicates_nothing(ray_cluster, test_fasta, reference_atlas, tmp_path):
    killed = []

    def worker_names() -> set[str]:
        return {a["name"] for a in ray_cluster.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith(WORKER_NAME_PREFIX)}

    earlier_runs = worker_names()

    def kill_one_replica(record) -> None:
        if not killed:
            victim = sorted(worker_names() - earlier_runs)[0]  # a replica of this run
            ray_cluster.kill(ray_cluster.get_actor(victim), no_restart=False)  # a crash: Ray restarts it
            killed.append(victim)

    out = tmp_path / "atlas"
    config = PredictConfig(fasta=test_fasta, out=str(out), dtype="float32", batch_size=2, workers=2,
                           windows_per_part=1, threads_per_worker=1, progress=False)
    summary = predict(config, on_part=kill_one_replica)
    assert killed and summary.parts == summary.units == 6
    report = validate(str(out), fasta=test_fasta)
    assert report.ok, report.table()
    assert_same_rows(read_atlas(out), read_atlas(reference_atlas))


DRIVER = textwrap.dedent(
    """
    import sys, ray
    from enformer_batch import PredictConfig, predict
    ray.init(address="local", num_cpus=2, object_store_memory=100 * 1024**2, include_dashboard=False,
             logging_level="ERROR")
    predict(PredictConfig(fasta=sys.argv[1], out=sys.argv[2], dtype="float32", batch_size=1, stride=57_344,
                          windows_per_part=1, threads_per_worker=1, manifest_interval_s=0, progress=False))
    """
)


def session_processes(sid: int) -> list[str]:
    """Live processes of a session (zombies are excluded: they are exit records waiting to be reaped)."""
    ps = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 3) for line in ps.splitlines() if line.strip()]
    return [" ".join(r) for r in rows if int(r[1]) == sid and not r[2].startswith("Z")]


# Ray's agents, by process title: they notice their raylet is gone only after about a minute.
SLOW_TO_NOTICE = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def end_session(sid: int) -> None:
    """Wait for, then kill, what is left of a killed driver's session (its private Ray cluster).

    Ray's GCS, raylet and workers die with the driver within seconds, and are left to do so (a worker may
    still be writing a part); its dashboard and runtime-env agents notice only after about a minute, so
    once nothing else is left the test ends them rather than wait or leave them.
    """
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(
        line.split(None, 3)[-1].startswith(SLOW_TO_NOTICE) for line in session_processes(sid)
    ):
        time.sleep(0.25)
    for line in session_processes(sid):
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.5)


def kill_driver_after_commits(script: str, args: list[str], out, commits: int = 2) -> dict:
    """Run ``script`` as a driver in its own session, SIGKILL it once its manifest lists ``commits`` parts,
    end what is left of its Ray cluster, and return the manifest it left behind."""
    driver = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            try:
                if len(json.loads((out / "_manifest.json").read_text())["parts"]) >= commits:
                    break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.05)
        assert driver.poll() is None, "the driver finished before it could be killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        end_session(driver.pid)
    assert session_processes(driver.pid) == []
    return json.loads((out / "_manifest.json").read_text())


def test_a_killed_driver_resumes_to_the_uninterrupted_atlas(ray_cluster, test_fasta, tmp_path):
    out = tmp_path / "interrupted"
    interrupted = kill_driver_after_commits(DRIVER, [test_fasta, str(out)], out)
    assert interrupted["status"] == "running" and not (out / "_SUCCESS").exists()
    kept = {p["path"]: p["sha256"] for p in interrupted["parts"]}
    assert 2 <= len(kept) < interrupted["totals"]["parts"]
    assert not validate(str(out)).ok

    config = dict(dtype="float32", batch_size=1, stride=57_344, windows_per_part=1, threads_per_worker=1)
    resumed = run_and_validate(test_fasta, out, **config)
    assert resumed.resumed_parts >= len(kept) and resumed.units_computed < resumed.units
    final = json.loads((out / "_manifest.json").read_text())
    assert all(p["sha256"] == kept[p["path"]] for p in final["parts"] if p["path"] in kept)

    straight = tmp_path / "straight"
    run_and_validate(test_fasta, straight, **config)
    assert_same_rows(read_atlas(out), read_atlas(straight))
    assert part_files(out) == part_files(straight)  # byte-identical parts


def test_damaged_parts_are_named_by_validate_and_rewritten_by_a_rerun(ray_cluster, test_fasta, reference_atlas,
                                                                     tmp_path):
    out = tmp_path / "atlas"
    shutil.copytree(reference_atlas, out)
    original = part_files(out)
    manifest = json.loads((out / "_manifest.json").read_text())
    truncated, deleted, flipped = (p["path"] for p in manifest["parts"])
    with open(out / truncated, "r+b") as f:
        f.truncate(100)
    os.remove(out / deleted)
    data = bytearray((out / flipped).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / flipped).write_bytes(bytes(data))
    stray = out / "chrom=chrB" / "part-000099-000100.parquet"
    stray.write_bytes(b"not a part")

    report = validate(str(out), fasta=test_fasta)
    text = "\n".join(report.problems)
    assert f"{truncated}: 100 bytes" in text and "truncated" in text
    assert f"{deleted} is listed in the manifest but missing" in text
    assert f"{flipped}: checksum" in text
    assert "stray part chrom=chrB/part-000099-000100.parquet" in text

    stray.unlink()
    # Resume finds all three: the flipped part has its recorded size, but not the version token the store
    # gave its commit (the atlas was also copied, so each part's checksum decides, read once).
    summary = run_and_validate(test_fasta, out, dtype="float32", batch_size=2, threads_per_worker=1)
    assert summary.resumed_parts == 0 and summary.units_computed == 6
    assert part_files(out) == original
    # The resume recorded the copies' tokens: the next one trusts them without reading a byte.
    summary = run_and_validate(test_fasta, out, dtype="float32", batch_size=2, threads_per_worker=1)
    assert summary.resumed_parts == 3 and summary.units_computed == 0


def test_an_unreadable_fasta_stops_the_run_naming_chromosome_and_window(ray_cluster, tmp_path):
    # More one-window parts than a replica keeps read ahead (STREAMS_IN_FLIGHT + 1 + writers), so some are still
    # to be read when the genome goes away.
    fasta = write_demo_genome(str(tmp_path / "g.fa"), (*TEST_GENOME, DemoChrom("chrC", 1_200_000)))
    removed = []

    def lose_the_fasta(record) -> None:  # the genome's file system goes away after the first commit
        if not removed:
            os.remove(fasta)
            removed.append(record.path)

    out = tmp_path / "atlas"
    with pytest.raises(RunError) as error:
        predict(PredictConfig(fasta=fasta, out=str(out), windows_per_part=1, workers=1, progress=False),
                on_part=lose_the_fasta)
    message = str(error.value)
    assert re.search(r"reading (chrA|chrB|chrC|contig_s) window \d+: FASTA not found", message), message
    assert "re-run" in message
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["status"] == "running" and not (out / "_SUCCESS").exists()
    assert removed[0] in {p["path"] for p in manifest["parts"]}  # committed parts are kept
    report = validate(str(out))
    expected = ("missing part", "not complete")
    assert not report.ok and all(any(e in p for e in expected) for p in report.problems), report.problems


def test_a_nan_from_the_model_stops_the_run_naming_the_windows(ray_cluster, test_fasta, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    model_dir = tmp_path / "nan-model"
    shutil.copytree(os.path.join(REPO, "enformer_batch", "demo_model"), model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    bias = next(k for k in weights if k.startswith("_heads.human") and k.endswith("bias"))
    weights[bias] = torch.full_like(weights[bias], float("nan"))
    save_file(weights, str(model_dir / "model.safetensors"))
    out = tmp_path / "atlas"
    with pytest.raises(RunError, match=r"run stopped: (chrA|chrB|contig_s) window\(s\) \[\d+.*NaN"):
        predict(PredictConfig(fasta=test_fasta, out=str(out), model=str(model_dir), progress=False))
    assert json.loads((out / "_manifest.json").read_text())["status"] == "running"
    assert not (out / "_SUCCESS").exists()


def test_a_replica_that_cannot_load_the_model_fails_the_run_instead_of_hanging(ray_cluster, tmp_path):
    """E.g. a model path that exists where the run was planned but not on a worker node."""
    from enformer_batch.engine import WorkerLayout, _WorkerPool
    from enformer_batch.families import CheckpointError
    from enformer_batch.inference import InferenceSettings
    from enformer_batch.store import OutputStore

    settings = InferenceSettings(model=str(tmp_path / "no-model"))
    pool = _WorkerPool(settings, OutputStore(str(tmp_path)), WorkerLayout(1, 0.0, 1, 1, 1))
    try:
        with pytest.raises(CheckpointError, match="no-model does not exist"):  # the loader's own error
            pool.describe(patience_s=120)
    finally:
        pool.shutdown()
