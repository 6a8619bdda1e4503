"""One driver per atlas: a lease object ``<out>/_lease.json`` with an owner and a heartbeat.

Owns who may write an atlas' manifest. ``predict`` takes the lease before it reads the manifest and holds
it until it returns; a second ``predict`` on the same ``--out`` meanwhile is refused, naming the holder.
The holder renews the lease every ``heartbeat_s``; a lease not renewed for ``timeout_s`` is stale and the
next driver takes it over, saying so. On the holder's own host a lease whose process is gone is stale at
once (a re-run after a crash or Ctrl-C need not wait). A driver that finds its lease taken over stops
writing the manifest (``check`` raises).

Atomicity, per store:

- Local and shared (NFS) file systems: the lease is created with ``link()`` (atomic, fails if it exists)
  and renewed, taken over or released under an ``flock`` on ``_lease.lock``, held only for a read-compare-
  write; the kernel (or the NFS lock manager) drops it when its process dies.
- S3: conditional writes. Creation is a PUT with ``If-None-Match: *``, renewal and take-over a PUT with
  ``If-Match: <ETag>`` of the lease as read (AWS S3 has both since 2024; so do MinIO and moto), so two
  drivers racing for one lease cannot both win.
- Other object stores: best effort. The lease is written when absent (or stale), then read back after
  ``settle_s``; the driver proceeds only if it reads itself back. Two drivers starting within the same
  second could still both proceed.

Staleness compares the holder's wall-clock heartbeat with the reader's clock, so it assumes clocks agree to
well under ``timeout_s`` (NTP keeps cluster nodes within milliseconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .store import AtlasStore, StoreError

LEASE = "_lease.json"
LOCK = "_lease.lock"
DEFAULT_TIMEOUT_S = float(os.environ.get("ENFORMER_BATCH_LEASE_TIMEOUT_S", 300))


class LeaseHeld(StoreError):
    """Another live driver holds the lease on this ``--out``."""


class LeaseLost(RuntimeError):
    """This driver's lease was taken over (it was stale); the run must stop writing."""


class _Conflict(Exception):
    """A conditional write found the lease changed since it was read."""


@dataclass(frozen=True)
class LeaseState:
    owner: str  # unique per acquisition
    host: str
    pid: int
    pid_start: str | None  # the process' start time (Linux), so a reused pid is not mistaken for the owner
    acquired: float
    heartbeat: float
    timeout_s: float

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def parse(cls, data: bytes) -> LeaseState | None:
        try:
            d = json.loads(data)
            return cls(**{k: d[k] for k in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError):
            return None  # a torn or foreign file: treated as stale

    def describe(self, now: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.acquired))
        return (f"pid {self.pid} on host {self.host}, started {started}, "
                f"last heartbeat {max(0.0, now - self.heartbeat):.0f} s ago")


def _process_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()  # field 22, starttime
    except (OSError, IndexError):
        return None


def _process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    current = _process_start(pid)
    if current is None:
        return True
    # A zombie (killed, not yet reaped by its parent) is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return False
    except OSError:
        pass
    return start is None or current == start


class Lease:
    """The lease on one atlas; ``acquire`` it, ``release`` it (also on errors); ``check`` before writing."""

    def __init__(
        self,
        store: AtlasStore,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        heartbeat_s: float | None = None,
        settle_s: float = 2.0,
        log: Callable[[str], None] | None = None,
    ):
        self.store = store
        self.timeout_s = float(timeout_s)
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else max(0.05, self.timeout_s / 6)
        self.settle_s = settle_s
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.path = store.path(LEASE)
        self.state: LeaseState | None = None
        self._version = None  # what the conditional write compares against: bytes (local) or ETag (S3)
        self._lost: str | None = None
        self._last_renewal = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- store primitives ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _critical(self):
        if not self.store.local:
            yield
            return
        import fcntl

        fd = os.open(self.store.path(LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _read(self):
        """``(state or None, version)``; version None when there is no lease."""
        fs = self.store.fs
        if self.store.local:
            try:
                with open(self.path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return None, None
            return LeaseState.parse(data), data
        for _ in range(5):
            self.store._forget_listings()
            try:
                if not self.store.s3:
                    data = fs.cat_file(self.path)
                    return LeaseState.parse(data), data
                # The ETag before and after the read agree, so it is the ETag of the bytes read.
                before = fs.info(self.path).get("ETag")
                data = fs.cat_file(self.path)
                self.store._forget_listings()
                if fs.info(self.path).get("ETag") == before:
                    return LeaseState.parse(data), before or data
            except FileNotFoundError:
                return None, None
        raise OSError(f"{self.path} keeps changing while it is read")

    def _create(self, data: bytes):
        """Write the lease only if there is none; FileExistsError otherwise. Returns its version."""
        if self.store.local:
            os.makedirs(self.store.root, exist_ok=True)
            tmp = self.store.path(f"_tmp-{uuid.uuid4().hex}.lease")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)  # atomic, and never a half-written lease
            finally:
                os.remove(tmp)
            return data
        if self.store.s3:
            answer = self.store.fs.pipe_file(self.path, data, mode="create")
            return (answer or {}).get("ETag") or data
        if self.store.fs.exists(self.path):
            raise FileExistsError(self.path)
        return self._best_effort_write(data)

    def _replace(self, data: bytes, expected):
        """Replace the lease if it is still ``expected``; ``_Conflict`` otherwise. Returns the new version."""
        if self.store.local:
            with self._critical():
                try:
                    with open(self.path, "rb") as f:
                        current = f.read()
                except FileNotFoundError:
                    current = None
                if current != expected:
                    raise _Conflict()
                self.store._publish_once(LEASE, data)
            return data
        if self.store.s3:
            try:
                if expected is None:
                    answer = self.store.fs.pipe_file(self.path, data, mode="create")
                else:
                    answer = self.store.fs.pipe_file(self.path, data, IfMatch=expected)
            except (FileExistsError, FileNotFoundError) as e:
                raise _Conflict() from e
            except OSError as e:
                if _precondition_failed(e):
                    raise _Conflict() from e
                raise
            return (answer or {}).get("ETag") or data
        _, current = self._read()
        if current != expected:
            raise _Conflict()
        return self._best_effort_write(data)

    def _best_effort_write(self, data: bytes):
        self.store.fs.pipe_file(self.path, data)
        time.sleep(self.settle_s)  # let a racing writer land, then see who won
        state, version = self._read()
        if state is None or state.owner != LeaseState.parse(data).owner:
            raise _Conflict()
        return version

    def _delete(self, expected) -> None:
        if self.store.local:
            with self._critical():
                try:
                    with open(self.path, "rb") as f:
                        if f.read() != expected:
                            return
                except FileNotFoundError:
                    return
                os.remove(self.path)
            return
        state, version = self._read()
        if state is None or self.state is None or state.owner != self.state.owner:
            return
        if self.store.s3 and isinstance(version, str):
            bucket, key, _ = self.store.fs.split_path(self.path)
            # Conditional where the store supports it, so a lease taken over meanwhile is not deleted.
            self.store.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=version)
            self.store._forget_listings()
        else:
            self.store.fs.rm(self.path)

    # --- protocol -----------------------------------------------------------------------------------
    def _new_state(self, acquired: float | None = None) -> LeaseState:
        now = time.time()
        return LeaseState(
            owner=self.state.owner if self.state else uuid.uuid4().hex,
            host=socket.gethostname(), pid=os.getpid(), pid_start=_process_start(os.getpid()),
            acquired=acquired if acquired is not None else now, heartbeat=now, timeout_s=self.timeout_s,
        )

    def stale_reason(self, state: LeaseState | None, now: float | None = None) -> str | None:
        """Why a lease may be taken over, or None when its holder must be presumed alive."""
        now = time.time() if now is None else now
        if state is None:
            return "the lease file is unreadable"
        # "This host" is the host name: containers that share one must share a PID namespace too, else a live
        # driver in a sibling container would look dead (Kubernetes pods have their own host names).
        if state.host == socket.gethostname() and not _process_alive(state.pid, state.pid_start):
            return f"its process (pid {state.pid} on this host) has exited"
        timeout = max(self.timeout_s, state.timeout_s)
        if now - state.heartbeat > timeout:
            return f"no heartbeat for {now - state.heartbeat:.0f} s (timeout {timeout:g} s)"
        return None

    def acquire(self) -> Lease:
        """Take the lease (or a stale one over), start the heartbeat, and fence the store's manifest writes.

        Raises ``LeaseHeld`` when a live driver holds it, ``StoreError`` when ``--out`` cannot be written.
        """
        url = self.store.url
        state = self._new_state()
        try:
            for _ in range(5):  # a lost race re-reads the winner's lease
                try:
                    self._version = self._create(state.to_bytes())
                    break
                except FileExistsError:
                    pass
                current, version = self._read()
                if version is None:
                    continue  # released between our create and our read: try again
                why = self.stale_reason(current)
                if why is None:
                    raise LeaseHeld(
                        f"--out {url} is in use by another predict ({current.describe(time.time())}); wait for "
                        f"it to finish or stop it: a lease without heartbeat for {current.timeout_s:g} s is "
                        "taken over"
                    )
                try:
                    self._version = self._replace(state.to_bytes(), version)
                except _Conflict:
                    continue
                holder = current.describe(time.time()) if current else "an unknown holder"
                self.log(f"enformer-batch: took over the lease on {url} from {holder}: {why}")
                break
            else:
                raise LeaseHeld(f"--out {url}: could not take the lease (other drivers keep taking it)")
        except (LeaseHeld, StoreError):
            raise
        except OSError as e:
            raise StoreError(f"--out {url} is not writable: {e}") from e
        self.state = state
        self._last_renewal = time.monotonic()
        self.store.lease = self
        self._thread = threading.Thread(target=self._beat, name="enformer-batch-lease", daemon=True)
        self._thread.start()
        return self

    def renew(self) -> None:
        """Write a fresh heartbeat; marks the lease lost if another driver has taken it over."""
        with self._lock:
            if self._lost or self.state is None:
                return
            fresh = self._new_state(acquired=self.state.acquired)
            try:
                self._version = self._replace(fresh.to_bytes(), self._version)
                self.state = fresh
                self._last_renewal = time.monotonic()
            except _Conflict:
                current, _ = self._read()
                holder = current.describe(time.time()) if current else "nobody (it was removed)"
                self._lost = f"the lease on {self.store.url} was taken over; it is now held by {holder}"
            except OSError as e:  # a store hiccup: keep trying until the lease would look stale to others
                if time.monotonic() - self._last_renewal > self.timeout_s:
                    self._lost = f"the lease on {self.store.url} could not be renewed for {self.timeout_s:.0f} s ({e})"

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.renew()
            if self._lost:
                self.log(f"enformer-batch: {self._lost}; this run stops writing the manifest")
                return

    def check(self) -> None:
        """Raise ``LeaseLost`` if this driver no longer holds the lease."""
        if self._lost:
            raise LeaseLost(f"{self._lost}; this run stopped (its committed parts are in the manifest)")
        if self.state is not None and time.monotonic() - self._last_renewal > self.timeout_s:
            raise LeaseLost(f"the lease on {self.store.url} was not renewed for {self.timeout_s:.0f} s; "
                            "another driver may have taken it over, so this run stopped")

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.store.lease is self:
            self.store.lease = None
        with self._lock:
            if self.state is not None and not self._lost:
                with contextlib.suppress(OSError):
                    self._delete(self._version)
            self.state = None


def _precondition_failed(error: BaseException) -> bool:
    seen = error
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict) and (response.get("Error") or {}).get("Code") in ("PreconditionFailed", "412"):
            return True
        if isinstance(response, dict) and (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") == 412:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def read_lease(store: AtlasStore) -> LeaseState | None:
    """The lease on an atlas, if any (for ``validate`` and operators)."""
    state, _ = Lease(store)._read()
    return state
