"""One driver per atlas: a lease object ``<out>/_lease.json`` with an owner and a heartbeat.

Owns who may write an atlas' manifest. ``predict`` takes the lease before it reads the manifest and holds
it until it returns; a second ``predict`` on the same ``--out`` meanwhile is refused, naming the holder.
The holder renews the lease every ``heartbeat_s``; a lease not renewed for ``timeout_s`` is stale and the
next driver takes it over, saying so. Where the holder's pid means what it means here (same host name, boot
id and PID namespace) a lease whose process is gone is stale at once (a re-run after a crash or Ctrl-C need
not wait). A lease file that cannot be parsed is refused, never taken over.

Fencing: each lease has an epoch, one more than the lease and the manifest it replaces. The store hands
``<epoch>:<owner>`` to replicas, which read the lease before each part they publish; the driver's manifest
writes are conditional on the lease (``write_manifest``, ``guarded``). A driver that finds its lease taken
over stops (``check`` raises ``LeaseLost``; the engine calls it at least once a second).

Atomicity, per store:

- Local and shared (NFS) file systems: the lease is created with ``link()`` (atomic, fails if it exists)
  and renewed, taken over or released under an ``flock`` on ``_lease.lock``, held only for a read-compare-
  write; the kernel (or the NFS lock manager) drops it when its process dies.
- S3: conditional writes. Creation is a PUT with ``If-None-Match: *``, renewal and take-over a PUT with
  ``If-Match: <ETag>`` of the lease as read (AWS S3 has both since 2024; so do MinIO and moto), so two
  drivers racing for one lease cannot both win. Probed once per ``--out``: a store that ignores the
  headers gets the best-effort lease below.
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

from .retry import is_transient
from .store import LEASE, MANIFEST, PROBE_PREFIX, LeaseLost, OutputStore, StoreError, fence_epoch

__all__ = ["LEASE", "Lease", "LeaseHeld", "LeaseLost", "LeaseState", "read_lease"]

LOCK = "_lease.lock"
DEFAULT_TIMEOUT_S = float(os.environ.get("ENFORMER_BATCH_LEASE_TIMEOUT_S", 300))
# Per --out (and process): whether the store enforced If-None-Match when probed (see ``_probe_conditional``).
_CONDITIONAL: dict[tuple[str, str], bool] = {}


class LeaseHeld(StoreError):
    """Another live driver holds the lease on this ``--out`` (or its lease file cannot be understood)."""


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
    # Fields added with fencing: default so that leases of earlier versions parse (and ours parse there,
    # which ignores unknown keys).
    epoch: int = 0  # one more than the lease (or manifest) it replaced: orders the drivers of an atlas
    boot_id: str | None = None  # /proc/sys/kernel/random/boot_id: the same host name may be another kernel
    pid_ns: str | None = None  # the holder's PID namespace: its pid means nothing in another one

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @property
    def fence(self) -> str:
        return f"{self.epoch}:{self.owner}"

    @classmethod
    def parse(cls, data: bytes) -> LeaseState | None:
        """The lease in ``data``, or None when it cannot be parsed (never "stale": see ``Lease.acquire``)."""
        try:
            d = json.loads(data)
            optional = {"epoch", "boot_id", "pid_ns"}
            state = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d or k not in optional})
            int(state.epoch), float(state.heartbeat), float(state.timeout_s), int(state.pid)
            return state
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def describe(self, now: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.acquired))
        return (f"pid {self.pid} on host {self.host}, started {started}, "
                f"last heartbeat {max(0.0, now - self.heartbeat):.0f} s ago")


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _boot_id() -> str | None:
    return _read_text("/proc/sys/kernel/random/boot_id")


def _pid_ns() -> str | None:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None


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
        store: OutputStore,
        timeout_s: float | None = None,
        heartbeat_s: float | None = None,
        settle_s: float = 2.0,
        log: Callable[[str], None] | None = None,
    ):
        self.store = store
        # Read at call time (not bound as a default): the environment variable, or a test, may set it.
        self.timeout_s = float(DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else max(0.05, self.timeout_s / 6)
        self.settle_s = settle_s
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.path = store.path(LEASE)
        self.state: LeaseState | None = None
        self._version = None  # what the conditional write compares against: bytes (local) or ETag (S3)
        self._lost: str | None = None
        self._last_renewal = 0.0  # wall clock (time.time): a monotonic clock stops while the host is suspended
        self._manifest_version = None  # S3: the ETag of the manifest as this driver last wrote (or read) it
        self.conditional = True  # False where the store ignores conditional writes (best effort instead)
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
        if self.store.s3 and self.conditional:
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
        if self.store.s3 and self.conditional:
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
            self.store.fs.rm_file(self.path)

    # --- protocol -----------------------------------------------------------------------------------
    def _new_state(self, acquired: float | None = None, epoch: int | None = None) -> LeaseState:
        now = time.time()
        return LeaseState(
            owner=self.state.owner if self.state else uuid.uuid4().hex,
            host=socket.gethostname(), pid=os.getpid(), pid_start=_process_start(os.getpid()),
            acquired=acquired if acquired is not None else now, heartbeat=now, timeout_s=self.timeout_s,
            epoch=epoch if epoch is not None else (self.state.epoch if self.state else 0),
            boot_id=_boot_id(), pid_ns=_pid_ns(),
        )

    def stale_reason(self, state: LeaseState | None, now: float | None = None) -> str | None:
        """Why a lease may be taken over, or None when its holder must be presumed alive.

        A lease that cannot be parsed is never stale (``acquire`` refuses it): it may be a live lease of
        another version of enformer-batch.
        """
        now = time.time() if now is None else now
        if state is None:
            return None
        # The "process has exited" shortcut only where its pid means what it means here: same host name, same
        # kernel (boot id) and same PID namespace. Containers that share a host name (host networking) but not
        # a PID namespace, or a lease from a version that recorded neither, wait for a missed heartbeat.
        same_process_space = (state.host == socket.gethostname() and state.boot_id is not None
                              and state.boot_id == _boot_id() and state.pid_ns is not None
                              and state.pid_ns == _pid_ns())
        if same_process_space and not _process_alive(state.pid, state.pid_start):
            return f"its process (pid {state.pid} on this host) has exited"
        timeout = max(self.timeout_s, state.timeout_s)
        if now - state.heartbeat > timeout:
            return f"no heartbeat for {now - state.heartbeat:.0f} s (timeout {timeout:g} s)"
        return None

    def _retrying(self, fn, what: str):
        return self.store.retrying(fn, f"{what} {self.store.url}/{LEASE}")

    def _probe_conditional(self) -> bool:
        """Whether the store enforces create-if-absent (If-None-Match), probed once per ``--out`` and process.

        Some S3-compatible stores (older MinIO, LocalStack, some Ceph) accept the header and ignore it: two
        drivers would both "create" the lease. Probe: write an object, then create it if absent, which must
        fail. Three requests (two PUTs and a DELETE).
        """
        if not self.store.s3:
            return True
        key = (self.store.url, json.dumps(self.store.storage_options, sort_keys=True, default=str))
        if key in _CONDITIONAL:
            return _CONDITIONAL[key]
        probe = self.store.path(f"{PROBE_PREFIX}conditional-{uuid.uuid4().hex}")
        fs = self.store.fs
        # A plain PUT first (a retried create whose first answer was lost would fail), then the create.
        self._retrying(lambda: fs.pipe_file(probe, b"1"), "probing conditional writes next to")

        def second() -> bool:
            try:
                fs.pipe_file(probe, b"2", mode="create")
            except FileExistsError:
                return True
            except OSError as e:
                if _precondition_failed(e):
                    return True
                raise
            return False

        try:
            enforced = self._retrying(second, "probing conditional writes next to")
        finally:
            with contextlib.suppress(OSError):  # else a leftover, removed with the others by the next run
                self._retrying(lambda: fs.rm_file(probe), "removing the conditional-write probe next to")
        _CONDITIONAL[key] = enforced
        if not enforced:
            self.log(f"enformer-batch: {self.store.url} ignores conditional writes (If-None-Match); using the "
                     "best-effort lease (write, wait, read back) and unconditional manifest writes")
        return enforced

    def acquire(self) -> Lease:
        """Take the lease (or a stale one over), start the heartbeat, and fence the store's writes.

        The new lease's epoch is one more than that of the lease it replaces and of the manifest's writer,
        so a fenced-out driver's writes are recognised (``OutputStore.fence``, ``write_manifest``).
        Raises ``LeaseHeld`` when a live driver holds it (or its lease file cannot be parsed), ``StoreError``
        when ``--out`` cannot be written.
        """
        url = self.store.url
        try:
            self.conditional = self._probe_conditional()
            manifest_epoch = self._manifest_epoch()
            for _ in range(5):  # a lost race re-reads the winner's lease
                current, version = self._retrying(self._read, "reading")
                if version is None:
                    state = self._new_state(epoch=manifest_epoch + 1)
                    try:
                        self._version = self._retrying(lambda state=state: self._create(state.to_bytes()),
                                                       "creating")
                        break
                    except FileExistsError:
                        current, version = self._retrying(self._read, "reading")
                        if version is None:
                            continue  # released between our create and our read: try again
                        if current is not None and current.owner == state.owner:
                            self._version = version  # our own create, whose answer was lost and retried
                            break
                if current is None:
                    raise LeaseHeld(
                        f"--out {url}: the lease file {LEASE} cannot be parsed (another version of "
                        "enformer-batch, or a damaged file); if no other predict runs on this --out, delete "
                        f"{url}/{LEASE} and re-run"
                    )
                why = self.stale_reason(current)
                if why is None:
                    raise LeaseHeld(
                        f"--out {url} is in use by another predict ({current.describe(time.time())}); wait for "
                        f"it to finish or stop it: a lease without heartbeat for {current.timeout_s:g} s is "
                        "taken over"
                    )
                state = self._new_state(epoch=max(manifest_epoch, int(current.epoch)) + 1)
                try:
                    self._version = self._retrying(
                        lambda state=state, version=version: self._replace(state.to_bytes(), version), "taking over"
                    )
                except _Conflict:
                    continue
                self.log(f"enformer-batch: took over the lease on {url} from {current.describe(time.time())}: {why}")
                break
            else:
                raise LeaseHeld(f"--out {url}: could not take the lease (other drivers keep taking it)")
        except (LeaseHeld, StoreError):
            raise
        except OSError as e:
            if is_transient(e) or isinstance(e.__cause__, OSError) and is_transient(e.__cause__):
                raise StoreError(f"--out {url}: the store kept failing while the lease was taken: {e}") from e
            raise StoreError(f"--out {url} is not writable: {e}") from e
        self.state = state
        self._last_renewal = state.heartbeat
        self.store.lease = self
        self.store.fence = state.fence
        self._thread = threading.Thread(target=self._beat, name="enformer-batch-lease", daemon=True)
        self._thread.start()
        return self

    def _manifest_epoch(self) -> int:
        """The epoch the manifest was last written under (0 without one); on S3 also its ETag."""
        if self.store.s3:
            def once():
                self.store._forget_listings()
                try:
                    return self.store.fs.info(self.store.path(MANIFEST)).get("ETag")
                except FileNotFoundError:
                    return None

            self._manifest_version = self._retrying(once, "reading the manifest next to")
        try:
            return fence_epoch(self.store.read_manifest())
        except StoreError:  # not JSON: the run refuses it (or --overwrite replaces it)
            return 0

    def renew(self) -> None:
        """Write a fresh heartbeat; marks the lease lost if another driver has taken it over."""
        with self._lock:
            if self._lost or self.state is None:
                return
            fresh = self._new_state(acquired=self.state.acquired)
            try:
                self._version = self._replace(fresh.to_bytes(), self._version)
                self.state = fresh
                self._last_renewal = fresh.heartbeat
            except _Conflict:
                current, _ = self._read()
                holder = current.describe(time.time()) if current else "nobody (it was removed)"
                self._lost = f"the lease on {self.store.url} was taken over; it is now held by {holder}"
            except OSError as e:  # a store hiccup: keep trying until the lease would look stale to others
                if time.time() - self._last_renewal > self.timeout_s:
                    self._lost = f"the lease on {self.store.url} could not be renewed for {self.timeout_s:.0f} s ({e})"

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.renew()
            if self._lost:
                # The run notices at its next check (``check``, at most a second away in the engine's loop).
                self.log(f"enformer-batch: {self._lost}; this run stops")
                return

    def check(self) -> None:
        """Raise ``LeaseLost`` if this driver no longer holds the lease (or cannot know that it does).

        Wall-clock time: a monotonic clock stops while the host is suspended, and others judge the lease by
        the wall clock.
        """
        if self._lost:
            raise LeaseLost(f"{self._lost}; this run stopped (its committed parts are in the manifest)")
        if self.state is not None and time.time() - self._last_renewal > self.timeout_s:
            raise LeaseLost(f"the lease on {self.store.url} was not renewed for {self.timeout_s:.0f} s; "
                            "another driver may have taken it over, so this run stopped")

    def _lose(self, why: str) -> LeaseLost:
        self._lost = self._lost or why
        return LeaseLost(f"{self._lost}; this run stopped (its committed parts are in the manifest)")

    def _still_ours(self) -> None:
        """Read the lease back and raise ``LeaseLost`` unless it is this driver's (call under ``_critical``)."""
        current, version = self._retrying(self._read, "reading")
        if current is None or current.fence != self.state.fence or (self.store.local and version != self._version):
            holder = current.describe(time.time()) if current else "nobody (it was removed)"
            raise self._lose(f"the lease on {self.store.url} was taken over; it is now held by {holder}")

    def guarded(self, action: Callable[[], object], what: str) -> None:
        """Run ``action`` (a write or delete of this atlas) only while this driver holds the lease.

        Locally the lease is read back under its ``flock``, which a take-over needs too, so no take-over can
        come between the check and the write. Elsewhere the read-back narrows the window to the write itself;
        manifest writes are conditional on their own version (``write_manifest``).
        """
        with self._lock, self._critical():
            self.check()
            if self.state is not None:
                self._still_ours()
            action()

    def write_manifest(self, manifest) -> None:
        """Write the manifest, stamped with this lease's epoch and owner, only if this driver still holds it.

        Locally: under the lease's ``flock``, after reading the lease back (``guarded``). On S3 with
        conditional writes: a PUT with ``If-Match`` on the ETag of the manifest as this driver last wrote it
        (``If-None-Match`` when there was none), so a write delayed past a take-over (retries, a pause) fails
        instead of replacing the new owner's manifest; a mismatch is resolved by the epoch in the manifest
        found (lower: an older driver's late write, replaced; otherwise this driver has lost). Elsewhere:
        the epoch in the current manifest is checked, then the lease read back, then the manifest written.
        """
        if self.state is None:
            raise LeaseLost(f"the lease on {self.store.url} is not held; not writing the manifest")
        data = json.dumps({**manifest, "lease": {"epoch": self.state.epoch, "owner": self.state.owner}},
                          indent=1).encode()
        what = f"writing {self.store.url}/{MANIFEST}"
        if not (self.store.s3 and self.conditional):
            def write() -> None:
                if not self.store.local:
                    self._check_manifest_epoch(self.store.read_manifest())
                self.store.publish(MANIFEST, data)

            self.guarded(write, what)
            return
        self.check()
        fs, path = self.store.fs, self.store.path(MANIFEST)
        for _ in range(5):
            expected = self._manifest_version

            def put(expected=expected):
                if expected is None:
                    return fs.pipe_file(path, data, mode="create")
                return fs.pipe_file(path, data, IfMatch=expected)

            try:
                answer = self._retrying(put, "writing the manifest next to")
                self._manifest_version = (answer or {}).get("ETag")
                self.store._forget_listings()
                return
            except (FileExistsError, FileNotFoundError):
                pass
            except OSError as e:
                if not _precondition_failed(e):
                    raise
            # Someone else wrote (or removed) the manifest since this driver last did: who?
            def current():
                self.store._forget_listings()
                try:
                    etag = fs.info(path).get("ETag")
                except FileNotFoundError:
                    return None, None
                return etag, self.store.read_manifest()

            etag, found = self._retrying(current, "reading the manifest next to")
            self._check_manifest_epoch(found)
            self._manifest_version = etag  # an older driver's late write, ours retried, or none: replace it
        raise self._lose(f"the manifest of {self.store.url} keeps changing under this driver")

    def _check_manifest_epoch(self, found) -> None:
        if found is None:
            return
        epoch, owner = fence_epoch(found), (found.get("lease") or {}).get("owner")
        if epoch > self.state.epoch or (epoch == self.state.epoch and owner not in (None, self.state.owner)):
            raise self._lose(f"the manifest of {self.store.url} was written by a driver that took the lease over "
                             f"(epoch {epoch}, this driver's {self.state.epoch})")

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.store.lease is self:
            self.store.lease = None
            self.store.fence = None
        with self._lock:
            if self.state is not None and not self._lost:
                with contextlib.suppress(OSError):  # a lease left behind is taken over once stale
                    self._retrying(lambda: self._delete(self._version), "releasing")
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


def read_lease(store: OutputStore) -> LeaseState | None:
    """The lease on an atlas, if any (for ``validate`` and operators)."""
    state, _ = Lease(store)._read()
    return state
