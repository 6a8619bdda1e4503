"""The jobs in jobs/, submitted with `ray job submit` to a real Ray head (dashboard included) started here.

The head is separate from the session's in-process cluster: its own ports and temp dir, and RAY_ADDRESS
unset. It is stopped by terminating the `ray start --block` process and then its process group, never with
`ray stop`, which kills every Ray process on the machine (the session cluster's and anyone else's).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pytest

from enformer_batch import validate

from .conftest import TEST_GENOME

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))

pytestmark = pytest.mark.skipif(
    not Path(RAY).exists() or shutil.which("ps") is None, reason="needs the ray command (ray[default])"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["RAY_AUTH_MODE"] = "disabled"  # a loopback test head; Ray 2.5x+ otherwise wants a token
    # Where the package is installed (editable in CI) this changes nothing; elsewhere it makes it importable.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@contextlib.contextmanager
def ray_head(num_cpus: int = 2):
    """A `ray start --head --block` with a dashboard on free loopback ports.

    Yields ``(dashboard address, process group)``: the head and everything it starts share a new session,
    so the teardown can end exactly those processes.
    """
    # Short path: Ray's Unix sockets live under it and socket paths are limited to ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rayjob", dir="/tmp")
    dashboard = free_port()
    options = {"--port": free_port(), "--dashboard-port": dashboard, "--ray-client-server-port": free_port(),
               "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
               "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port(),
               "--node-manager-port": free_port(), "--object-manager-port": free_port()}
    command = [RAY, "start", "--head", "--block", "--num-cpus", str(num_cpus), "--num-gpus", "0",
               "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--temp-dir", temp_dir,
               "--disable-usage-stats"] + [str(x) for kv in options.items() for x in kv]
    log = open(os.path.join(temp_dir, "ray-start.log"), "w")
    head = subprocess.Popen(command, env=ray_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    tail = Path(log.name).read_text()[-2000:]
                    raise RuntimeError(f"ray head did not start: {tail}") from None
                time.sleep(0.5)
        yield address, head.pid
    finally:
        stop_process_group(head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_process_group(head: subprocess.Popen) -> None:
    """Stop `ray start --block` (on SIGTERM it stops what it started), then whatever is left of its group."""
    head.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait()
    deadline = time.monotonic() + 15
    while group_members(head.pid) and time.monotonic() < deadline:
        time.sleep(0.2)


def group_members(pgid: int) -> list[str]:
    """Live (not zombie) processes of a process group, as `ps` lines."""
    lines = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True).stdout
    return [line for line in lines.splitlines()
            if line.split(None, 1)[0] == str(pgid) and not line.split()[1].startswith("Z")]


def submit(address: str, working_dir: Path, *entrypoint: str) -> subprocess.CompletedProcess:
    command = [RAY, "job", "submit", "--address", address, "--working-dir", str(working_dir), "--",
               sys.executable, *entrypoint]
    return subprocess.run(command, env=ray_env(), capture_output=True, text=True, timeout=240)


def test_jobs_run_under_ray_job_submit(test_fasta, tmp_path):
    job_dir = tmp_path / "job"
    shutil.copytree(ROOT / "jobs", job_dir / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    bed = tmp_path / "regions.bed"
    bed.write_text("chrB\t1000\t1300\nchrA\t0\t129\n")
    atlas, regions, scores = tmp_path / "atlas", tmp_path / "regions", tmp_path / "scores"
    vcf = tmp_path / "calls.vcf"
    sequence = "".join(line.strip() for line in open(test_fasta) if not line.startswith(">"))
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n" + "".join(
        f"chrA\t{p}\t.\t{sequence[p - 1]}\t{'A' if sequence[p - 1] != 'A' else 'T'}\n" for p in (100, 200)))
    with ray_head() as (address, group):
        done = submit(address, job_dir, "jobs/genome_atlas.py", test_fasta, "--out", str(atlas), "--dtype",
                      "float32")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "succeeded" in done.stdout and "manifest status complete; OK" in done.stdout
        done = submit(address, job_dir, "jobs/regions.py", test_fasta, str(bed), "--out", str(regions),
                      "--dtype", "float32")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        done = submit(address, job_dir, "jobs/variants.py", str(vcf), "--fasta", test_fasta, "--out", str(scores),
                      "--scores", "sad,l2")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "status: ok 2" in done.stdout and "manifest status complete; OK" in done.stdout
        assert len(group_members(group)) > 3  # gcs, raylet, dashboard, ...: the group is the right handle
    assert not group_members(group), "Ray processes left behind"
    for out in (atlas, regions):
        report = validate(str(out), fasta=test_fasta)
        assert report.ok, report.table()
    whole = {c.chrom: c for c in validate(str(atlas)).chroms}
    assert {c: whole[c].bins_found for c in whole} == {c.name: -(-c.length // 128) for c in TEST_GENOME}
    assert [c.bins_found for c in validate(str(regions)).chroms] == [2, 4]

    # The region job's rows are the whole-genome job's rows for those bins.
    track = duckdb.sql(f"select * from read_parquet('{regions}/*/*.parquet') limit 0").columns[2]
    joined = duckdb.sql(
        f"select r.\"{track}\" as part, w.\"{track}\" as whole from "
        f"read_parquet('{regions}/*/*.parquet', hive_partitioning=true) r join "
        f"read_parquet('{atlas}/*/*.parquet', hive_partitioning=true) w using (chrom, start, \"end\")"
    ).fetchnumpy()
    assert len(joined["part"]) == 6
    np.testing.assert_array_equal(joined["part"], joined["whole"])
