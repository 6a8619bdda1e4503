"""Peak driver RSS and Ray object-store use, sampled in a background thread (shared by the benchmarks)."""

from __future__ import annotations

import threading
import time


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def object_store_used() -> int:
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    return int(get_memory_info_reply(get_state_from_address()).store_stats.object_store_bytes_used)


class Sampler(threading.Thread):
    """Peaks of driver RSS and object-store use, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval = interval
        self.stop = threading.Event()
        self.rss_peak = 0
        self.store_peak = 0
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.rss_peak = max(self.rss_peak, rss_bytes())
            try:
                self.store_peak = max(self.store_peak, object_store_used())
            except Exception:  # noqa: BLE001 - the store may be between states; keep sampling
                pass
            self.samples += 1
            time.sleep(self.interval)
