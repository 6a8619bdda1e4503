"""Fencing and conditional commits: every writer of an atlas is fenced by its lease, every commit is conditional,
and nothing outside ``--out`` is touched. Real processes, real files, and the loopback S3 server (moto) of
``tests/test_s3.py``, behind proxies that fail or strip requests the way real stores do.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pytest

from enformer_batch import PredictConfig, open_atlas, predict
from enformer_batch.lease import LEASE, Lease, LeaseHeld, LeaseLost, LeaseState, _boot_id, _pid_ns
from enformer_batch.store import MANIFEST, SUCCESS, OutputStore, PartRecord, records_from_manifest

from .test_faults import part_files
from .test_s3 import BUCKET, FlakyProxy, _ProxyHandler, no_client_retries
from .test_s3 import s3 as s3  # noqa: F401,PLC0414 - the module-scoped moto server fixture

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = dict(dtype="float32", batch_size=2, threads_per_worker=1)  # the settings of `reference_atlas`


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": REPO}


def quiet(message: str) -> None:
    pass


# --- 1. --out is a directory, never a pattern -------------------------------------------------------


def fake_part(root: Path, chrom: str = "chrA", name: str = "part-000000-000001.parquet") -> Path:
    path = root / f"chrom={chrom}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1 " + str(root).encode())
    return path


@pytest.mark.parametrize("out_name, sibling_name", [("atlas[v2]", "atlasv"), ("atlas?", "atlasX"),
                                                    ("atlas*", "atlas-other")])
def test_an_out_named_like_a_glob_lists_and_deletes_only_its_own_files(tmp_path, out_name, sibling_name):
    out, sibling = tmp_path / out_name, tmp_path / sibling_name
    ours = fake_part(out)
    theirs = fake_part(sibling)
    (out / "chrom=chrA" / "_tmp-ours.tmp").write_bytes(b"x")
    (sibling / "chrom=chrA" / "_tmp-theirs.tmp").write_bytes(b"x")  # another run's upload in progress
    (sibling / "_write_probe-theirs").write_bytes(b"")
    store = OutputStore(str(out))
    assert store.list_part_files() == ["chrom=chrA/part-000000-000001.parquet"]
    assert store.list_leftovers() == ["chrom=chrA/_tmp-ours.tmp"]
    assert store.remove_leftovers() == ["chrom=chrA/_tmp-ours.tmp"]
    store.remove_all()
    assert not ours.exists()
    assert theirs.exists() and (sibling / "chrom=chrA" / "_tmp-theirs.tmp").exists()
    assert (sibling / "_write_probe-theirs").exists()


def test_overwrite_of_an_out_named_like_a_glob_leaves_its_sibling_alone(ray_cluster, test_fasta, reference_atlas,
                                                                       tmp_path):
    sibling = tmp_path / "atlasv"
    shutil.copytree(reference_atlas, sibling)
    leftover = sibling / "chrom=chrA" / "_tmp-inflight.tmp"
    leftover.write_bytes(b"another run's upload in progress")
    before = part_files(sibling)
    out = tmp_path / "atlas[v2]"
    shutil.copytree(reference_atlas, out)
    # Another dtype: another run identity, so --overwrite deletes the earlier run's parts first.
    predict(PredictConfig(fasta=test_fasta, out=str(out), progress=False, overwrite=True, dtype="float16",
                          batch_size=2, threads_per_worker=1))
    assert part_files(sibling) == before and leftover.exists()
    assert open_atlas(str(out)).manifest["identity"]["dtype"] == "float16"


def test_an_s3_out_named_like_a_glob_lists_only_its_own_objects(s3):  # noqa: F811
    fs = s3["fs"]
    fs.pipe_file(f"{BUCKET}/globs/atlasv/chrom=chrA/part-000000-000001.parquet", b"theirs")
    fs.pipe_file(f"{BUCKET}/globs/atlasv/chrom=chrA/_tmp-theirs.tmp", b"x")
    fs.pipe_file(f"{BUCKET}/globs/atlas[v2]/chrom=chrA/part-000000-000001.parquet", b"ours")
    store = OutputStore(f"s3://{BUCKET}/globs/atlas[v2]", s3["options"])
    assert store.list_part_files() == ["chrom=chrA/part-000000-000001.parquet"]
    assert store.list_leftovers() == []
    store.remove_all()
    fs.invalidate_cache()
    assert fs.exists(f"{BUCKET}/globs/atlasv/chrom=chrA/part-000000-000001.parquet")
    assert fs.exists(f"{BUCKET}/globs/atlasv/chrom=chrA/_tmp-theirs.tmp")
    assert not fs.exists(f"{BUCKET}/globs/atlas[v2]/chrom=chrA/part-000000-000001.parquet")


# --- 2. a driver that lost its lease stops, and its writers are fenced out ---------------------------

THIEF = textwrap.dedent(
    """
    # Takes the lease over the way a driver that judged it stale does (a host that shares the host name but
    # not the PID namespace, a skewed clock, a paused holder), then writes its own manifest.
    import fcntl, json, os, sys, uuid
    out = sys.argv[1]
    fd = os.open(os.path.join(out, "_lease.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    lease = json.load(open(os.path.join(out, "_lease.json")))
    lease.update(owner=uuid.uuid4().hex, pid=os.getpid(), epoch=lease.get("epoch", 0) + 1)
    tmp = os.path.join(out, "_tmp-thief")
    open(tmp, "w").write(json.dumps(lease))
    os.replace(tmp, os.path.join(out, "_lease.json"))
    manifest = {"status": "running", "parts": [], "lease": {"epoch": lease["epoch"], "owner": lease["owner"]}}
    open(tmp, "w").write(json.dumps(manifest))
    os.replace(tmp, os.path.join(out, "_manifest.json"))
    os.close(fd)
    print(lease["epoch"], flush=True)
    """
)


def test_a_driver_that_loses_its_lease_stops_within_a_heartbeat(ray_cluster, test_fasta, tmp_path, monkeypatch):
    import enformer_batch.lease as lease_module

    monkeypatch.setattr(lease_module, "DEFAULT_TIMEOUT_S", 1.2)  # a heartbeat every 0.2 s
    out = tmp_path / "atlas"
    seen: list[str] = []
    stolen: dict = {}

    def steal_after_the_first_part(record: PartRecord) -> None:
        seen.append(record.path)
        if len(seen) == 1:
            epoch = subprocess.run([sys.executable, "-c", THIEF, str(out)], env=child_env(), check=True,
                                   capture_output=True, text=True).stdout.strip()
            stolen["epoch"] = int(epoch)
            stolen["manifest"] = (out / MANIFEST).read_bytes()
            time.sleep(1.0)  # five heartbeats: the driver has noticed by now

    with pytest.raises(LeaseLost, match=re.escape(f"the lease on {out} was taken over; it is now held by pid ")):
        predict(PredictConfig(fasta=test_fasta, out=str(out), progress=False, windows_per_part=1, **REFERENCE),
                on_part=steal_after_the_first_part)
    assert len(seen) == 1  # nothing more was committed after the take-over
    assert stolen["epoch"] == 2  # the first driver held epoch 1
    assert (out / MANIFEST).read_bytes() == stolen["manifest"]  # the new owner's manifest was never replaced
    assert not (out / SUCCESS).exists()


def test_parts_carry_the_lease_fence_and_a_fenced_out_replica_does_not_publish(tmp_path):
    out = tmp_path / "atlas"
    lease = Lease(OutputStore(str(out)), timeout_s=0.3, heartbeat_s=3600, log=quiet).acquire()
    try:
        replica_store = pickle.loads(pickle.dumps(lease.store))  # as Ray ships it to a replica
        assert replica_store.fence == lease.store.fence == f"1:{lease.state.owner}"
        part = type("P", (), {"chrom": "chrA", "name": "part-000000-000001.parquet", "first": 0, "end": 1})()
        table = pa.table({"start": pa.array([0], pa.int64()), "end": pa.array([128], pa.int64())})
        record = replica_store.write_part(part, table)
        assert record.fence == lease.store.fence
        lease.store.write_manifest({"status": "running", "parts": [record.__dict__]})
        assert records_from_manifest(json.loads((out / MANIFEST).read_text()))[record.path].fence == record.fence
        time.sleep(0.4)
        taker = Lease(OutputStore(str(out)), timeout_s=0.3, log=quiet).acquire()  # the first driver paused
        try:
            before = (out / record.path).stat()
            with pytest.raises(LeaseLost, match=r"this writer started under \(epoch 1\) is held under epoch 2; "
                                                r"not writing chrom=chrA/part-000000-000001.parquet"):
                replica_store.write_part(part, table)
            after = (out / record.path).stat()
            assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        finally:
            taker.release()
    finally:
        lease.release()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lease(store: OutputStore, **fields) -> None:
    now = time.time()
    state = {"owner": "other", "host": socket.gethostname(), "pid": dead_pid(), "pid_start": None,
             "acquired": now - 60, "heartbeat": now - 1, "timeout_s": 60.0, **fields}
    os.makedirs(store.root, exist_ok=True)
    Path(store.path(LEASE)).write_text(json.dumps(state))


def test_a_live_lease_from_another_pid_namespace_on_the_same_host_name_is_not_taken_over(tmp_path):
    store = OutputStore(str(tmp_path / "atlas"))
    # Containers with host networking: same host name, same kernel, another PID namespace, where the pid
    # is alive although it is not here.
    write_lease(store, boot_id=_boot_id(), pid_ns="4026599999")
    with pytest.raises(LeaseHeld, match=r"is in use by another predict \(pid \d+ on host "):
        Lease(store, timeout_s=60, log=quiet).acquire()
    write_lease(store)  # a lease of an earlier version (no namespace recorded): a missed heartbeat is needed
    with pytest.raises(LeaseHeld):
        Lease(store, timeout_s=60, log=quiet).acquire()
    write_lease(store, boot_id=_boot_id(), pid_ns=_pid_ns())  # here, and its process is gone: taken at once
    messages: list[str] = []
    lease = Lease(store, timeout_s=60, log=messages.append).acquire()
    lease.release()
    assert "has exited" in messages[0]


# --- 3. manifest writes are conditional ---------------------------------------------------------------

TAKER = textwrap.dedent(
    """
    import json, sys
    from enformer_batch.lease import Lease
    from enformer_batch.store import OutputStore
    options = json.loads(sys.argv[2])
    store = OutputStore(sys.argv[1], options)
    lease = Lease(store, timeout_s=0.5, log=lambda m: None).acquire()
    store.write_manifest({"status": "running", "parts": [], "by": "taker"})
    lease._stop.set()  # leave the lease (and the manifest) as a live new owner would
    print(getattr(lease.state, "epoch", None), flush=True)
    """
)


def late_manifest_write_is_refused(url: str, options: dict, read_manifest) -> None:
    first = Lease(OutputStore(url, options), timeout_s=0.5, heartbeat_s=3600, log=quiet).acquire()
    try:
        first.store.write_manifest({"status": "running", "parts": [], "by": "first"})
        time.sleep(0.6)  # the first driver pauses; its lease goes stale and another driver takes it over
        taken = subprocess.run([sys.executable, "-c", TAKER, url, json.dumps(options)], env=child_env(),
                               check=True, capture_output=True, text=True)
        assert read_manifest()["by"] == "taker"
        # The first driver's check ran before the take-over (check-then-act): only the write itself can
        # still refuse.
        first.check = lambda: None
        with pytest.raises(LeaseLost):
            first.store.write_manifest({"status": "running", "parts": [], "by": "first, late"})
        assert read_manifest()["by"] == "taker"
        assert taken.stdout.strip() == "2" and read_manifest()["lease"]["epoch"] == 2
    finally:
        first.release()


def test_a_manifest_write_after_a_take_over_is_refused_locally(tmp_path):
    out = tmp_path / "atlas"
    late_manifest_write_is_refused(str(out), {}, lambda: json.loads((out / MANIFEST).read_text()))


def test_a_manifest_write_after_a_take_over_is_refused_on_s3(s3):  # noqa: F811
    url = f"s3://{BUCKET}/fenced/manifest"
    late_manifest_write_is_refused(url, s3["options"],
                                   lambda: json.loads(s3["fs"].cat_file(f"{BUCKET}/fenced/manifest/{MANIFEST}")))


def test_an_older_drivers_late_manifest_write_is_replaced_by_the_owner_on_s3(s3):  # noqa: F811
    url = f"s3://{BUCKET}/fenced/late-old"
    owner = Lease(OutputStore(url, s3["options"]), timeout_s=60, log=quiet).acquire()
    try:
        owner.store.write_manifest({"status": "running", "parts": []})
        stale = {"status": "running", "parts": [], "lease": {"epoch": owner.state.epoch - 1, "owner": "old"}}
        s3["fs"].pipe_file(f"{BUCKET}/fenced/late-old/{MANIFEST}", json.dumps(stale).encode())  # lands late
        owner.store.write_manifest({"status": "complete", "parts": []})  # If-Match fails; epoch 0 < 1: replaced
        assert json.loads(s3["fs"].cat_file(f"{BUCKET}/fenced/late-old/{MANIFEST}"))["status"] == "complete"
    finally:
        owner.release()


def test_the_holder_judges_its_lease_by_the_wall_clock(tmp_path):
    lease = Lease(OutputStore(str(tmp_path / "atlas")), timeout_s=5, heartbeat_s=3600, log=quiet).acquire()
    try:
        lease.check()
        # What a suspended host sees on waking: the wall clock moved on, a monotonic clock did not.
        lease._last_renewal = time.time() - 6
        with pytest.raises(LeaseLost, match="was not renewed for 5 s"):
            lease.check()
    finally:
        lease.release()


# --- 4. stores that ignore conditional writes ---------------------------------------------------------


class _StrippingHandler(_ProxyHandler):
    def _forward(self) -> None:
        for header in ("If-None-Match", "If-Match"):
            if header in self.headers:
                del self.headers[header]
                self.server.stripped += 1
        super()._forward()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward  # the base class bound its own _forward


class NoConditionalsProxy(FlakyProxy):
    """A store that accepts If-None-Match / If-Match and ignores them (older MinIO, LocalStack, some Ceph)."""

    def __init__(self, upstream_port: int):
        self.stripped = 0
        super().__init__(upstream_port, error_rate=0.0)
        self.RequestHandlerClass = _StrippingHandler


def test_a_store_that_ignores_conditional_writes_is_probed_and_gets_the_read_back_lease(s3):  # noqa: F811
    proxy = NoConditionalsProxy(s3["port"])
    try:
        options = {**s3["options"], "endpoint_url": proxy.url}
        url = f"s3://{BUCKET}/fenced/no-conditionals"
        messages: list[str] = []
        first = Lease(OutputStore(url, options), timeout_s=60, settle_s=0.05, log=messages.append).acquire()
        try:
            assert proxy.stripped >= 1
            assert any("ignores conditional writes (If-None-Match); using the best-effort lease" in m
                       for m in messages), messages
            with pytest.raises(LeaseHeld, match=f"--out {url} is in use by another predict"):
                Lease(OutputStore(url, options), timeout_s=60, settle_s=0.05, log=quiet).acquire()
            first.store.write_manifest({"status": "running", "parts": []})
        finally:
            first.release()
    finally:
        proxy.shutdown()
    messages = []
    direct = Lease(OutputStore(f"s3://{BUCKET}/fenced/conditionals", s3["options"]), log=messages.append).acquire()
    direct.release()
    assert direct.conditional and messages == []  # moto itself enforces them


# --- 7. readers and --overwrite ---------------------------------------------------------------------


def test_a_reader_never_opens_an_atlas_that_overwrite_is_deleting(reference_atlas, tmp_path, monkeypatch):
    out = tmp_path / "atlas"
    shutil.copytree(reference_atlas, out)
    open_atlas(str(out))
    store = OutputStore(str(out))
    deleted, opened_mid_deletion = [], []

    def then_read(remove):
        def remove_then_read(path, *args, **kwargs):  # a reader opens the atlas after each deletion
            remove(path, *args, **kwargs)
            deleted.append(path)
            try:
                open_atlas(str(out))
                opened_mid_deletion.append(path)
            except ValueError:
                pass

        return remove_then_read

    monkeypatch.setattr(store.fs, "rm_file", then_read(store.fs.rm_file))
    monkeypatch.setattr(store.fs, "rm", then_read(store.fs.rm))
    store.remove_all()
    monkeypatch.undo()
    assert len(deleted) == len(part_files(reference_atlas)) + 2 and opened_mid_deletion == []
    assert not part_files(out) and not (out / MANIFEST).exists() and not (out / SUCCESS).exists()
    shutil.copytree(reference_atlas, tmp_path / "copy")
    (tmp_path / "copy" / SUCCESS).unlink()  # as a deletion that stopped right after the marker leaves it
    with pytest.raises(ValueError, match=r"has a complete manifest but no _SUCCESS: it is being overwritten"):
        open_atlas(str(tmp_path / "copy"))
    assert open_atlas(str(tmp_path / "copy"), allow_incomplete=True).manifest["status"] == "complete"


# --- 8. every storage call is retried ---------------------------------------------------------------


class OncePerRequestProxy(FlakyProxy):
    """Answers the first of every distinct request (method, path and query) with 500, before the server
    sees it; the retry goes through."""

    def __init__(self, upstream_port: int, key_part: str):
        super().__init__(upstream_port, error_rate=0.0)
        self.key_part = key_part
        self.seen: set = set()
        self.failed: list = []

    def draw_for(self, method: str, path: str) -> str | None:
        key = (method, unquote(path).split("&x-id=")[0])
        with self.lock:
            if self.key_part in unquote(path) and key not in self.seen:
                self.seen.add(key)
                self.failed.append(key)
                return "before"
        return None


def test_one_transient_error_on_any_storage_call_is_retried(s3):  # noqa: F811
    prefix = f"{BUCKET}/fenced/flaky"
    committed = b"committed part bytes"
    s3["fs"].pipe_file(f"{prefix}/chrom=chrA/part-000000-000001.parquet", committed)
    proxy = OncePerRequestProxy(s3["port"], "/fenced/flaky")
    try:
        store = OutputStore(f"s3://{prefix}", no_client_retries(s3["options"], proxy.url))
        lease = Lease(store, timeout_s=60, log=quiet).acquire()  # probe, manifest read, lease creation
        try:
            store.check_writable()
            assert store.read_manifest() is None
            assert store.list_part_files() == ["chrom=chrA/part-000000-000001.parquet"]
            assert store.list_leftovers() == []
            ((path, (size, _)),) = store.part_tokens().items()
            record = PartRecord(path, "chrA", 0, 1, 1, size, hashlib.sha256(committed).hexdigest(), "etag:other")
            kept, dropped = store.intact_parts({path: record})  # the end-of-run check: listing, then a hash read
            assert list(kept) == [path] and not dropped
            store.write_manifest({"status": "complete", "parts": []})
            store.mark_success()
            store.remove_all()
        finally:
            lease.release()
    finally:
        proxy.shutdown()
    methods = {method for method, _ in proxy.failed}
    assert {"PUT", "GET", "HEAD"} <= methods and len(proxy.failed) >= 10, proxy.failed
    s3["fs"].invalidate_cache()
    assert not s3["fs"].exists(f"{prefix}/{LEASE}")  # released, its DELETE retried too


# --- 11. a lease that cannot be parsed is not stale ----------------------------------------------------


@pytest.mark.parametrize("content", [b"{not json", b'{"holder": "a future version", "beat": 1}', b""])
def test_a_lease_file_that_cannot_be_parsed_is_refused_not_taken_over(tmp_path, content):
    store = OutputStore(str(tmp_path / "atlas"))
    os.makedirs(store.root)
    Path(store.path(LEASE)).write_bytes(content)
    with pytest.raises(LeaseHeld, match=rf"the lease file {LEASE} cannot be parsed .*; if no other predict runs "
                                        rf"on this --out, delete {store.url}/{LEASE} and re-run"):
        Lease(store, timeout_s=60, log=quiet).acquire()
    assert Path(store.path(LEASE)).read_bytes() == content
    assert LeaseState.parse(content) is None


def test_a_lease_written_by_an_earlier_version_still_parses():
    earlier = {"owner": "o", "host": "h", "pid": 1, "pid_start": None, "acquired": 1.0, "heartbeat": 2.0,
               "timeout_s": 300.0}
    state = LeaseState.parse(json.dumps(earlier).encode())
    assert state is not None and state.epoch == 0 and state.pid_ns is None


# --- import circle ----------------------------------------------------------------------------------


def test_store_does_not_import_the_engine():
    tree = ast.parse(Path(REPO, "enformer_batch", "store.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "engine" not in imported and "enformer_batch.engine" not in imported, imported

