"""Retrying transient I/O errors: which errors are worth another try, and the bounded backoff between tries.

Owns the line between an error that a second attempt can fix (a 503 or 500 from an object store, a read
timeout, a reset connection, a stale NFS handle) and one it cannot (a missing or unreadable file, bad FASTA
bytes, NaN from the model, a permission error). Object-store clients retry some of these themselves
(botocore, s3fs); this layer adds a per-operation budget that holds whatever the client did, so that one
unlucky part costs seconds of backoff instead of the run, and a persistent fault still stops the run
with the part named.
"""

from __future__ import annotations

import errno
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# errno values that describe the transport or a busy server, not the request itself.
_TRANSIENT_ERRNOS = {
    errno.EIO, errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED,
    errno.ECONNREFUSED, errno.EPIPE, errno.ENETDOWN, errno.ENETUNREACH, errno.ENETRESET, errno.EHOSTUNREACH,
    errno.ESTALE, getattr(errno, "EREMOTEIO", errno.EIO),
}
# Exception classes of HTTP stacks (botocore, aiohttp, urllib3, http.client, fsspec), matched by name so that
# none of those libraries has to be importable here.
_TRANSIENT_CLASSES = {
    "HTTPClientError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "EndpointConnectionError", "ProxyConnectionError", "ResponseStreamingError", "IncompleteReadError",
    "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError", "ClientPayloadError",
    "ServerTimeoutError", "ClientOSError", "FSTimeoutError", "IncompleteRead", "RemoteDisconnected",
    "ProtocolError", "ReadTimeout", "ConnectTimeout",
}
# S3 (and S3-compatible) error codes that mean "try again later".
_TRANSIENT_CODES = {
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeoutException",
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "BandwidthLimitExceeded",
    "503", "500", "502", "504",
}
# Deterministic at the top of the chain, whatever caused them: retrying cannot change the answer.
_PERMANENT = (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError,
              ValueError, TypeError, KeyError, MemoryError, ArithmeticError)


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _client_error_transient(error: BaseException) -> bool:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return False
    code = str((response.get("Error") or {}).get("Code", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code in _TRANSIENT_CODES or (isinstance(status, int) and (status >= 500 or status == 429))


def is_transient(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) is an I/O failure that a later attempt may not meet."""
    if isinstance(error, _PERMANENT) or isinstance(error, RetriesExhausted):  # its budget is spent: no nesting
        return False
    for e in _chain(error):
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if type(e).__name__ in _TRANSIENT_CLASSES or any(c.__name__ in _TRANSIENT_CLASSES for c in type(e).__mro__):
            return True
        if _client_error_transient(e):
            return True
        if isinstance(e, OSError) and not isinstance(e, _PERMANENT) and e.errno in _TRANSIENT_ERRNOS:
            return True
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` tries; before try ``i + 1``, a pause of ``min(cap_s, base_s * 2**i)`` times a
    random factor in [0.5, 1] (jitter, so that replicas hit by the same outage do not retry in step)."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 8.0

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        rng = rng or random
        return min(self.cap_s, self.base_s * 2**retry) * rng.uniform(0.5, 1.0)


DEFAULT_POLICY = RetryPolicy()


class RetriesExhausted(OSError):
    """A transient error that kept happening; the message names the operation and the last error."""


def with_retries(
    fn: Callable[[], T],
    what: str,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> T:
    """``fn()``, retried on transient errors with backoff; permanent errors propagate at once.

    After ``policy.attempts`` transient failures, raises ``RetriesExhausted`` naming ``what`` (e.g. the
    part) and the last error.
    """
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as e:
            if not is_transient(e):
                raise
            if attempt + 1 == policy.attempts:
                raise RetriesExhausted(
                    f"{what} failed {policy.attempts} times with transient errors; last: {describe(e)}"
                ) from e
            pause = policy.delay(attempt)
            log(f"enformer-batch: {what}: {describe(e)}; retrying in {pause:.1f} s "
                f"(attempt {attempt + 2} of {policy.attempts})")
            sleep(pause)
    raise AssertionError("unreachable")


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
