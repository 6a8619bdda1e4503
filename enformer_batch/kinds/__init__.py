"""Job kinds: each kind of run (atlas, variants, mutagenesis, edits, attribution, genes) owns its whole contract in
one module.

A kind says what its options are (a ``RunOptions`` subclass and its command-line arguments), how it plans
parts from a run identity (``parts``: one function the run and ``validate`` share), the schema of its parts,
and how ``validate`` checks their coverage. ``enformer_batch.cli`` and ``enformer_batch.validate`` loop over
``KINDS``; the engine drives every kind's job through its ``Job``/``Mode``/``Part`` protocols and records the
kind in the manifest (docs/contract.md). A new job kind is one module here plus a line in ``KINDS``.

Layering: kinds sit on the engine (and below); they never import the atlas reader, ``validate`` or the
command line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import pyarrow as pa

from ..engine import Part, RunOptions, RunSummary
from ..store import OutputStore, PartRecord
from . import atlas, attribution, edits, genes, mutagenesis, variants
from .base import Coverage


class Kind(Protocol):
    """One kind of job, everything about it: options, plan, schema, coverage, command line."""

    name: str  # recorded in the manifest ("kind"): atlas, variants, mutagenesis, edits, genes
    command: str  # the ``enformer-batch`` command that runs it
    config: type[RunOptions]  # its options
    help: str  # its line in ``enformer-batch --help``
    description: str  # its ``enformer-batch <command> --help``
    # Inputs ``validate`` can compare the output with, by name (``--<name>``), each with its help.
    validate_inputs: Mapping[str, str]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Its command's arguments (the shared run options included)."""

    def config_from_args(self, args: argparse.Namespace) -> RunOptions:
        """Its config from parsed ``add_arguments`` arguments."""

    def run(self, config: Any, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
        """Run (or resume) the job that ``config`` describes."""

    def parts(self, identity: Mapping) -> Sequence[Part]:
        """Every part the run plans, from its run identity: what the run computes and ``validate`` expects."""

    def schema(self, identity: Mapping) -> pa.Schema:
        """The schema of every part of the run."""

    def coverage(self, identity: Mapping, store: OutputStore) -> Coverage:
        """``validate``'s coverage check of a finished output of this kind."""


KINDS: dict[str, Kind] = {
    k.name: k for k in (atlas.KIND, variants.KIND, mutagenesis.KIND, edits.KIND, attribution.KIND, genes.KIND)
}


def kind_name(manifest: Mapping) -> str:
    """The kind a manifest records; manifests written before kinds were recorded say it through the identity
    (``mode`` in scored tables, nothing in atlases)."""
    name = manifest.get("kind")
    if name is None:
        name = (manifest.get("identity") or {}).get("mode", "atlas")
    return name


def kind_of(manifest: Mapping) -> Kind:
    """The kind of the run a manifest describes; ValueError for one this version does not know."""
    name = kind_name(manifest)
    if name not in KINDS:
        raise ValueError(f"kind {name!r} is not one this enformer-batch knows ({', '.join(KINDS)}); a newer "
                         "version wrote it")
    return KINDS[name]


__all__ = ["KINDS", "Kind", "kind_name", "kind_of"]
