"""The atlas on an object store: a real S3 server (moto) on loopback, the FASTA, BED and weights on it too.

Endpoint and credentials travel as storage options (never environment variables): the session's Ray workers
were started before these tests and would not see them. A small proxy in front of the server answers a
share of requests with 500/503 to show that retries neither lose nor duplicate a part.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from enformer_batch import PredictConfig, predict, validate
from enformer_batch.cli import main as cli_main
from enformer_batch.genome import FastaSource, read_codes

from .conftest import TEST_GENOME

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

BUCKET = "atlas-bucket"
BIN = 128


class FlakyProxy(http.server.ThreadingHTTPServer):
    """An HTTP proxy to the S3 server that fails a share of requests the way S3 does under load.

    Half of the injected failures are answered before the request reaches the server (503 SlowDown), half
    after it was applied (500 InternalError: the PUT happened but the client never heard), which is the
    case that would duplicate a part if part names were not deterministic.
    """

    daemon_threads = True

    def __init__(self, upstream_port: int, error_rate: float, seed: int = 0):
        self.upstream_port = upstream_port
        self.error_rate = error_rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.injected = {"before": 0, "after": 0}
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def draw_for(self, method: str, path: str) -> str | None:
        return self.draw()

    def draw(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.rng.random() >= self.error_rate:
                return None
            when = self.rng.choice(["before", "after"])
            self.injected[when] += 1
            return when


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FlakyProxy

    def log_message(self, *args) -> None:  # quiet
        pass

    def _error(self, status: int, code: str) -> None:
        body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                f"<Message>injected by the test proxy</Message></Error>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        failure = self.server.draw_for(self.command, self.path)
        if failure == "before":
            self._error(503, "SlowDown")
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        finally:
            upstream.close()
        if failure == "after":
            self._error(500, "InternalError")
            return
        self.send_response(response.status)
        # A HEAD answer's Content-Length is the object's size, not this (empty) body's: keep the server's.
        dropped = ("connection", "transfer-encoding", "date", "server") + (
            () if self.command == "HEAD" else ("content-length",))
        for key, value in response.getheaders():
            if key.lower() not in dropped:
                self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


@pytest.fixture(scope="module")
def s3(test_fasta):
    """A moto S3 server on loopback with the test genome uploaded (with and without its .fai)."""
    import pyfaidx
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    # moto keeps its buckets in process-wide state that outlives a server: another module's server (this
    # fixture, imported by test_fencing) leaves its bucket behind unless the state is reset.
    _moto_reset(host, port)
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(BUCKET)
    pyfaidx.Faidx(test_fasta).close()  # make sure the local .fai exists to upload
    fs.put_file(test_fasta, f"{BUCKET}/indexed/test.fa")
    fs.put_file(test_fasta + ".fai", f"{BUCKET}/indexed/test.fa.fai")
    fs.put_file(test_fasta, f"{BUCKET}/bare/test.fa")
    fs.put_file(test_fasta, f"{BUCKET}/bare-run/test.fa")  # indexed by the first predict only
    yield {"fs": fs, "options": options, "port": port}
    _moto_reset(host, port)
    server.stop()


def _moto_reset(host: str, port: int) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("POST", "/moto-api/reset")
    assert conn.getresponse().status == 200
    conn.close()


def read_back(url: str, options: dict) -> dict:
    """Every row through pyarrow.dataset over s3fs, queried with DuckDB (ordered by chrom, start).

    DuckDB's own S3 reader (the httpfs extension) is downloaded on first use and cannot be loaded offline;
    where it can, the same rows are read with read_parquet('s3://...') too and must agree.
    """
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    dataset = ds.dataset(url.removeprefix("s3://"), filesystem=fs, format="parquet", partitioning="hive")
    table = dataset.to_table()
    # DuckDB reads float16 from Parquet but not from Arrow memory: widen (exactly) before handing it over.
    table = table.cast(pa.schema([f.with_type(pa.float32()) if pa.types.is_float16(f.type) else f
                                  for f in table.schema]))
    con = duckdb.connect()
    con.register("atlas", table)
    rows = con.sql("select * from atlas order by chrom, start").fetchnumpy()
    try:
        con.sql("load httpfs")
    except duckdb.Error:
        return rows
    endpoint = options["endpoint_url"].removeprefix("http://")
    con.sql(f"create secret (type s3, key_id '{options['key']}', secret '{options['secret']}', "
            f"endpoint '{endpoint}', use_ssl false, url_style 'path')")
    direct = con.sql(f"select * from read_parquet('{url}/*/*.parquet', hive_partitioning=true) "
                     "order by chrom, start").fetchnumpy()
    assert np.array_equal(direct["start"], rows["start"])
    return rows


def assert_same_rows(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for column in a:
        left, right = np.ma.asarray(a[column]), np.ma.asarray(b[column])
        assert np.array_equal(np.ma.getmaskarray(left), np.ma.getmaskarray(right)), column
        assert np.array_equal(np.ma.filled(left, 0), np.ma.filled(right, 0)), column


def config(fasta: str, out: str, options: dict, **kw) -> PredictConfig:
    return PredictConfig(fasta=fasta, out=out, storage_options=options, progress=False, windows_per_part=2,
                         **kw)


@pytest.fixture(scope="module")
def clean_run(ray_cluster, s3):
    """A whole-genome run from a FASTA on S3 that has no .fai yet, into an S3 prefix."""
    out = f"s3://{BUCKET}/atlases/clean"
    assert not s3["fs"].exists(f"{BUCKET}/bare-run/test.fa.fai")
    summary = predict(config(f"s3://{BUCKET}/bare-run/test.fa", out, s3["options"]))
    return out, summary


def test_fasta_on_s3_with_and_without_index(s3, test_fasta):
    local = FastaSource(test_fasta)
    for prefix in ("indexed", "bare"):
        remote = FastaSource(f"s3://{BUCKET}/{prefix}/test.fa", s3["options"])
        assert remote.lengths() == local.lengths() == {c.name: c.length for c in TEST_GENOME}
        a, b = remote.open(), local.open()
        try:
            for chrom in TEST_GENOME:
                for start, end in ((-500, 700), (chrom.length - 900, chrom.length + 300)):
                    np.testing.assert_array_equal(read_codes(a, chrom.name, chrom.length, start, end),
                                                  read_codes(b, chrom.name, chrom.length, start, end))
        finally:
            a.close()
            b.close()


def test_predict_validate_and_read_back_on_s3(clean_run, s3):
    out, summary = clean_run
    fs = s3["fs"]
    # The index was missing on S3: opening the FASTA built it and stored it beside the FASTA.
    assert fs.exists(f"{BUCKET}/bare-run/test.fa.fai")
    report = validate(out, fasta=f"s3://{BUCKET}/indexed/test.fa", storage_options=s3["options"])
    assert report.ok, report.table()
    assert report.status == "complete" and fs.exists(f"{BUCKET}/atlases/clean/_SUCCESS")
    rows = read_back(out, s3["options"])
    for chrom in TEST_GENOME:
        starts = rows["start"][rows["chrom"] == chrom.name]
        assert np.array_equal(starts, np.arange(-(-chrom.length // BIN)) * BIN)  # every bin exactly once
    assert summary.rows == len(rows["start"])
    # Nothing but parts, the manifest and the marker: no temporary objects or write probes left behind.
    names = {p.rsplit("/", 1)[-1] for p in fs.find(f"{BUCKET}/atlases/clean")}
    assert names - {"_manifest.json", "_SUCCESS"} == {p.rsplit("/", 1)[-1] for p in fs.glob(
        f"{BUCKET}/atlases/clean/chrom=*/part-*.parquet")}


class Interrupted(Exception):
    pass


def test_resume_on_s3_after_interrupt_and_lost_part(clean_run, s3, capsys):
    out = f"s3://{BUCKET}/atlases/resumed"
    fasta = f"s3://{BUCKET}/indexed/test.fa"
    seen = []

    def interrupt(record) -> None:
        seen.append(record.path)
        if len(seen) == 2:
            raise Interrupted  # the driver stops after two committed parts of three

    # The command line's default of 16 windows per part: one part per test chromosome.
    with pytest.raises(Interrupted):
        predict(PredictConfig(fasta=fasta, out=out, storage_options=s3["options"], progress=False),
                on_part=interrupt)
    assert not validate(out, storage_options=s3["options"]).ok  # incomplete, and says so
    fs = s3["fs"]
    truncated = f"{BUCKET}/atlases/resumed/{seen[0]}"
    fs.pipe_file(truncated, fs.cat_file(truncated)[:-100])

    # Resume through the command line, so endpoint and credentials go as KEY=VALUE storage options.
    so = [f"--storage-option={k}={v}" for k, v in s3["options"].items()]
    capsys.readouterr()
    assert cli_main(["predict", fasta, "--out", out, "--no-progress", *so]) == 0
    # Of the three parts, the truncated one and the one never committed are computed again.
    assert "1 parts resumed), 3368 bins in 3 parts" in capsys.readouterr().out
    assert cli_main(["validate", out, "--fasta", fasta, *so]) == 0
    assert_same_rows(read_back(out, s3["options"]), read_back(clean_run[0], s3["options"]))


def test_server_errors_are_retried_without_losing_or_duplicating_parts(clean_run, s3):
    proxy = FlakyProxy(s3["port"], error_rate=0.2, seed=1)
    try:
        flaky = {**s3["options"], "endpoint_url": proxy.url,
                 # botocore's standard mode retries 500/503 with jittered backoff; 10 attempts make an
                 # unlucky streak at a 20 % failure rate practically impossible (0.2^10).
                 "config_kwargs": {"retries": {"max_attempts": 10, "mode": "standard"}}}
        out = f"s3://{BUCKET}/atlases/flaky"
        predict(config(f"s3://{BUCKET}/indexed/test.fa", out, flaky))
    finally:
        proxy.shutdown()
    assert proxy.injected["before"] > 0 and proxy.injected["after"] > 0, proxy.injected
    report = validate(out, storage_options=s3["options"])  # read back without the proxy
    assert report.ok, report.table()
    assert_same_rows(read_back(out, s3["options"]), read_back(clean_run[0], s3["options"]))


def test_regions_and_weights_from_s3(s3, tmp_path):
    from importlib import resources

    from enformer_batch.kinds.atlas import select_bins
    from enformer_batch.loader import load_model

    fs = s3["fs"]
    fs.pipe_file(f"{BUCKET}/inputs/regions.bed", b"chrB\t1000\t1300\nchrA\t0\t129\n")
    lengths = {c.name: c.length for c in TEST_GENOME}
    cfg = PredictConfig(fasta="unused", out="unused", regions=f"s3://{BUCKET}/inputs/regions.bed",
                        storage_options=s3["options"])
    assert select_bins(cfg, lengths, BIN) == {"chrA": ((0, 2),), "chrB": ((7, 11),)}

    demo = resources.files("enformer_batch") / "demo_model"
    for item in demo.iterdir():
        fs.put_file(str(item), f"{BUCKET}/models/demo/{item.name}")
    remote = load_model(f"s3://{BUCKET}/models/demo", storage_options=s3["options"], cache_dir=str(tmp_path))
    assert remote.weights_sha256 == load_model("demo").weights_sha256


def test_credentials_and_endpoint_from_the_standard_environment(clean_run, s3):
    """No storage options at all: AWS_ENDPOINT_URL and the AWS_* keys, as on a real cluster node."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=s3["options"]["endpoint_url"], AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    command = [sys.executable, "-m", "enformer_batch.cli", "validate", clean_run[0], "--fasta",
               f"s3://{BUCKET}/indexed/test.fa"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "manifest status complete; OK" in done.stdout


def test_store_sees_parts_written_by_other_processes(s3):
    """Workers publish parts from other processes: the driver's cached s3fs listings must not hide them."""
    import s3fs

    from enformer_batch.store import OutputStore

    store = OutputStore(f"s3://{BUCKET}/atlases/listing", s3["options"])
    worker = s3fs.S3FileSystem(skip_instance_cache=True, **s3["options"])  # as another process would
    worker.pipe_file(f"{BUCKET}/atlases/listing/chrom=chrA/part-000000-000001.parquet", b"a")
    assert store.list_part_files() == ["chrom=chrA/part-000000-000001.parquet"]  # listing now cached
    worker.pipe_file(f"{BUCKET}/atlases/listing/chrom=chrA/part-000001-000002.parquet", b"bb")
    assert store.exists("chrom=chrA/part-000001-000002.parquet")
    assert store.size("chrom=chrA/part-000001-000002.parquet") == 2
    assert len(OutputStore(f"s3://{BUCKET}/atlases/listing", s3["options"]).list_part_files()) == 2


def test_variant_scores_from_a_gzipped_vcf_on_s3_into_s3(ray_cluster, s3, test_fasta, tmp_path):
    """score-variants reads a gzip VCF and the FASTA from S3, writes its table there, resumes and validates."""
    import gzip

    from enformer_batch import VariantConfig, score_variants

    sequence = "".join(line.strip() for line in open(test_fasta) if not line.startswith(">"))[:2000]
    records = "".join(f"chrA\t{p}\t.\t{sequence[p - 1]}\t{'C' if sequence[p - 1] != 'C' else 'G'}\t.\t.\t.\n"
                      for p in (500, 900, 1500))
    text = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + records
    s3["fs"].pipe_file(f"{BUCKET}/vcf/calls.vcf.gz", gzip.compress(text.encode()))
    out = f"s3://{BUCKET}/variants/calls"
    config = VariantConfig(vcf=f"s3://{BUCKET}/vcf/calls.vcf.gz", fasta=f"s3://{BUCKET}/indexed/test.fa", out=out,
                           storage_options=s3["options"], variants_per_part=2, progress=False)
    first = score_variants(config)
    assert first.units == first.rows == 3 and first.counts == {"ok": 3}
    assert validate(out, vcf=config.vcf, storage_options=s3["options"]).ok
    s3["fs"].rm(f"{BUCKET}/variants/calls/chrom=chrA/part-000000002-000000003.parquet")  # a lost part
    again = score_variants(config)
    assert again.units_computed == 1 and again.resumed_parts == 1
    table = ds.dataset(f"{BUCKET}/variants/calls", filesystem=s3["fs"], format="parquet",
                       partitioning="hive").to_table()
    assert sorted(table.column("pos").to_pylist()) == [500, 900, 1500]
    assert table.column("status").to_pylist() == ["ok"] * 3


# --- issue 15: retries of one part's uploads, the lease and late writes on S3 -----------------------------


class PartFailingProxy(FlakyProxy):
    """Fails the uploads (PUTs) of one object ``failures`` times with 500 InternalError, after the server applied
    them; everything else passes through."""

    def __init__(self, upstream_port: int, key_part: str, failures: int):
        super().__init__(upstream_port, error_rate=0.0)
        self.key_part, self.failures = key_part, failures
        self.failed = 0

    def draw_for(self, method: str, path: str) -> str | None:
        with self.lock:
            if method == "PUT" and self.key_part in unquote(path) and self.failed < self.failures:
                self.failed += 1
                return "after"
        return None


def no_client_retries(options: dict, endpoint: str) -> dict:
    # botocore would retry a 500 itself; with one attempt each failure reaches enformer-batch's own retries.
    retries = {"total_max_attempts": 1, "mode": "standard"}  # (max_attempts would count retries only)
    return {**options, "endpoint_url": endpoint, "config_kwargs": {"retries": retries}}


def test_failed_uploads_of_one_part_are_retried_then_stop_the_run_naming_it(clean_run, s3):
    from enformer_batch.engine import RunError

    part = "chrom=chrB/part-000000-000002.parquet"
    proxy = PartFailingProxy(s3["port"], f"/atlases/retried/{part}", failures=3)
    try:
        out = f"s3://{BUCKET}/atlases/retried"
        predict(config(f"s3://{BUCKET}/indexed/test.fa", out, no_client_retries(s3["options"], proxy.url)))
    finally:
        proxy.shutdown()
    assert proxy.failed == 3  # three failed uploads of that part, the fourth went through
    report = validate(out, storage_options=s3["options"])
    assert report.ok, report.table()
    assert_same_rows(read_back(out, s3["options"]), read_back(clean_run[0], s3["options"]))

    proxy = PartFailingProxy(s3["port"], f"/atlases/stopped/{part}", failures=100)
    try:
        out = f"s3://{BUCKET}/atlases/stopped"
        with pytest.raises(RunError, match=rf"run stopped: writing {out}/{part} failed 5 times with transient "
                                           r"errors; last: OSError: .*injected by the test proxy"):
            predict(config(f"s3://{BUCKET}/indexed/test.fa", out, no_client_retries(s3["options"], proxy.url),
                           chroms=("chrB",)))
    finally:
        proxy.shutdown()
    assert proxy.failed == 5
    assert not validate(out, storage_options=s3["options"]).ok


def test_lease_on_s3_uses_conditional_writes(s3):
    from enformer_batch.lease import LEASE, Lease, LeaseHeld, _Conflict
    from enformer_batch.store import OutputStore

    url = f"s3://{BUCKET}/atlases/leased"
    first = Lease(OutputStore(url, s3["options"]), timeout_s=2.0, log=lambda m: None).acquire()
    with pytest.raises(LeaseHeld, match=f"--out {url} is in use by another predict"):
        Lease(OutputStore(url, s3["options"]), timeout_s=2.0).acquire()
    # Creation is If-None-Match: a second creator loses even without reading first.
    with pytest.raises(FileExistsError):
        Lease(OutputStore(url, s3["options"]))._create(b"{}")

    first._stop.set()  # the first driver freezes: no more heartbeats
    first._thread.join()
    time.sleep(2.2)
    takers = [Lease(OutputStore(url, s3["options"]), timeout_s=2.0) for _ in range(2)]
    state, etag = takers[0]._read()
    assert takers[0].stale_reason(state) is not None
    # Two drivers take the stale lease over from the same read: If-Match lets exactly one win.
    takers[0]._replace(b'{"owner": "a"}', etag)
    with pytest.raises(_Conflict):
        takers[1]._replace(b'{"owner": "b"}', etag)
    s3["fs"].rm(f"{BUCKET}/atlases/leased/{LEASE}")

    second = Lease(OutputStore(url, s3["options"]), timeout_s=2.0).acquire()
    first._stop.clear()
    first.renew()  # the frozen driver wakes up: its conditional heartbeat fails, so it knows
    assert first._lost and "was taken over" in first._lost
    second.release()
    assert not s3["fs"].exists(f"{BUCKET}/atlases/leased/{LEASE}")


def test_a_late_write_on_s3_is_found_by_its_etag(s3):
    from enformer_batch.store import OutputStore, PartRecord

    store = OutputStore(f"s3://{BUCKET}/atlases/late", s3["options"])
    path = "chrom=chrA/part-000000-000001.parquet"
    data = b"committed bytes"
    token = store.publish(path, data)
    record = PartRecord(path, "chrA", 0, 1, 1, len(data), hashlib.sha256(data).hexdigest(), token)
    assert token.startswith("etag:") and store.part_tokens()[path] == (len(data), token)
    assert store.intact_parts({path: record}) == ({path: record}, {})

    other = s3fs.S3FileSystem(skip_instance_cache=True, **s3["options"])  # the late replica, elsewhere
    other.pipe_file(f"{BUCKET}/atlases/late/{path}", b"Committed bytes")  # same size, other bytes
    assert store.intact_parts({path: record}) == ({}, {path: "rewritten after its commit (checksum differs)"})
    other.pipe_file(f"{BUCKET}/atlases/late/{path}", data)  # the same bytes again: harmless, and kept
    kept, dropped = store.intact_parts({path: record})
    assert list(kept) == [path] and not dropped
