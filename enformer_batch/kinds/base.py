"""What every job kind shares: the driver's job skeleton, and the coverage types ``validate`` drives.

A kind's job (the engine's ``Job``) is ``FastaJob`` with a few hooks: the mode for a model geometry, the
inputs it reads before Ray starts, the identity fields of its own, totals and notes. The skeleton builds the
rest of the run identity (the model's part and the FASTA's) once for every kind, and plans the parts with the
kind's ``parts(identity)``: the same function ``validate`` re-plans a finished output with (docs/contract.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from ..engine import JobPlan, Mode, RunOptions, model_identity
from ..genome import FastaSource
from ..settings import InferenceSettings, ModelInfo
from ..windows import ENFORMER, Geometry

if TYPE_CHECKING:
    from . import Kind


class FastaJob:
    """The engine's ``Job`` for a kind whose input is a genome: one skeleton, the kind fills in its hooks.

    ``options`` is the kind's config (a ``RunOptions`` with a ``fasta`` field); ``kind`` the kind itself.
    """

    def __init__(self, options: RunOptions, kind: Kind):
        self.options = options
        self.kind = kind
        self.fasta = FastaSource(options.fasta, dict(options.storage_options))  # type: ignore[attr-defined]
        self.lengths: dict[str, int] = {}
        # Until the model is known (plan): the engine may ship a mode before, and Enformer's is the default.
        self.mode: Mode = self.make_mode(ENFORMER)

    # --- hooks ---

    def make_mode(self, geometry: Geometry) -> Mode:
        """The kind's ``Mode`` for a model of this geometry."""
        raise NotImplementedError

    def read_inputs(self) -> None:
        """Read and check the kind's own inputs (a VCF, regions, edits) before Ray starts; ``lengths`` is known."""

    def identity_fields(self, info: ModelInfo, previous: Mapping | None) -> dict:
        """The run identity's fields of this kind (``previous``: the manifest at ``--out``, None if none)."""
        raise NotImplementedError

    def totals(self, identity: Mapping, parts: Any) -> dict:
        """At least ``parts`` and ``units``, for the progress bar and the manifest."""
        raise NotImplementedError

    def feed(self, parts: Any) -> Iterable[Any]:
        """The parts the run computes, re-iterable (a resume iterates them to check the genome first): the
        planned ones, or (variants) the planned ones filled while streaming, re-streamed on each iteration."""
        return parts

    def notes(self) -> tuple[str, ...]:
        return ()

    # --- the skeleton ---

    def inference_settings(self) -> InferenceSettings:
        return self.options.inference_settings()

    def prepare(self) -> None:
        """Fail fast on bad input, before Ray starts: the FASTA index, then the kind's inputs."""
        self.lengths = self.fasta.lengths()
        self.read_inputs()

    def identity(self, info: ModelInfo, previous: Mapping | None = None) -> dict:
        """Everything that decides the output's contents; a resume must match it exactly."""
        return {
            **model_identity(self.options, info),
            "fasta": {"name": self.fasta.name, "chromosomes": dict(self.lengths)},
            **self.identity_fields(info, previous),
        }

    def plan(self, info: ModelInfo, previous: Mapping | None = None) -> JobPlan:
        self.mode = self.make_mode(info.geometry)
        identity = self.identity(info, previous)
        parts = self.kind.parts(identity)  # what validate re-plans from the manifest: one function
        return JobPlan(identity=identity, totals=self.totals(identity, parts), parts=self.feed(parts),
                       notes=self.notes(), kind=self.kind.name)


# --- coverage: what a kind tells ``validate`` -----------------------------------------------------


@dataclass
class ChromCoverage:
    """One line of a validation report: what a chromosome should hold and what its parts hold."""

    chrom: str
    length: int
    bins_expected: int  # in the kind's coverage unit: bins of an atlas, rows of a scored table
    bins_found: int = 0
    duplicates: int = 0
    parts: int = 0


class Checker(Protocol):
    """What a validation task needs to check one part of a kind, shipped to Ray tasks: small and picklable."""

    schema: pa.Schema
    columns: tuple[str, ...]  # read from each part: key columns only, never the values
    fasta: str | None  # a genome to compare the parts' base codes with; None: not checked

    def summarise(self, path: str, planned: Any, table: pa.Table) -> tuple[list[str], Any]:
        """Problems of the part's key columns, and a small summary the driver merges (``Coverage.merge``)."""

    def check_codes(self, path: str, planned: Any, recorded: str) -> list[str]:
        """Problems when the bases under the part differ from those it was computed from (only with ``fasta``)."""


class Coverage(Protocol):
    """A kind's coverage check of a finished output, built from its manifest's identity."""

    unit: str  # what coverage counts: "bins", "rows"

    def fasta_chromosomes(self) -> list[str]:
        """Chromosomes whose lengths ``validate --fasta`` compares with the genome."""

    def planned_paths(self) -> Mapping[str, Any]:
        """Every part the run planned, by path (from the kind's ``parts(identity)``)."""

    def with_inputs(self, planned: Mapping[str, Any], inputs: Mapping[str, str], storage_options,
                    ) -> Mapping[str, Any]:
        """The planned parts as ``check_codes`` reads them under ``--fasta``: as planned, or (variants) filled
        with their rows from ``--vcf``."""

    def checker(self, inputs: Mapping[str, str], fasta: str | None, storage_options) -> Checker: ...

    def merge(self, path: str, planned: Any, summary: Any) -> None:
        """Take in one checked part's summary."""

    def finish(self, complete: bool, inputs: Mapping[str, str], storage_options,
               ) -> tuple[list[ChromCoverage], list[str]]:
        """The report's lines and the problems left once every part is merged (``complete``: the run says so)."""


def codes_problems(mode: Mode, fasta: str, path: str, part: Any, recorded: str, what: str) -> list[str]:
    """``validate --fasta``'s check of one part: its codes re-read by ``mode`` (the kind's reader stage on
    ``fasta``) and digested as the run digested them (``integrity.part_codes_digest``, as a resume does);
    ``what``: the part's inputs in words, for the report."""
    from ..integrity import part_codes_digest

    try:
        digest = part_codes_digest(mode, part)
    except Exception as e:  # noqa: BLE001 - e.g. a chromosome the FASTA lacks: reported by the driver
        digest = f"unreadable ({e})"
    if digest == recorded:
        return []
    return [f"part {path}: the bases of {what} in {fasta} differ from those it was predicted from (another "
            "masking or build of the genome?)"]
