"""Plain formatting shared by every layer (no imports): byte counts for messages and reports."""

from __future__ import annotations

__all__ = ["human_bytes"]


def human_bytes(n: float) -> str:
    """``n`` bytes in decimal (SI) units for people: ``512 B``, ``1.5 kB``, ``12.3 MB``, ``1,234.5 TB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError("unreachable")
