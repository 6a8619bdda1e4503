"""Warm model replicas for ``serve``: one ``Predictor`` per device, each fed by a worker thread from one bounded queue.

Scoring goes through the batch commands' own code (``EditMode.read`` and ``MutagenesisMode.read`` build the
inputs, ``score_part`` predicts and reduces them), so an answer equals what ``edits`` or ``mutagenesis`` writes for
the same row; ``score_part``'s ``predictions`` hook hands over the reference and alternate tracks the scores came
from, for the page to plot. With gene models, the same hook feeds ``score-variants --genes``' own reducer
(``GeneReducer``, over ``window_genes``' bin masks), so an edit's gene scores are that command's for the same
allele.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..annotation import Annotation
from ..engine import RunError
from ..gene_scores import DEFAULT_TSS_FLANK, GENE_SCORES, GeneReducer, WindowGenes, window_genes, window_origin
from ..genome import FastaSource, read_codes
from ..kinds.edits import Edit, EditMode, EditPart
from ..kinds.mutagenesis import MutagenesisMode, MutagenesisPart, Region
from ..kinds.scoring import SCORES, VariantInputs, check_finite, score_part
from ..settings import InferenceSettings, ModelInfo

# Edits taken off the queue together and scored in one ``score_part`` call (requests that arrived together).
MAX_MICRO_BATCH = 16


class QueueFull(Exception):
    """Every replica is busy and the queue is at its bound (HTTP 429)."""


@dataclass
class EditAnswer:
    status: str
    scores: np.ndarray | None  # float32 [len(SCORES), tracks]; None when not scored
    ref: np.ndarray | None  # float32 [output_bins, tracks]
    alt: np.ndarray | None
    first_bp: int  # where the first output bin starts
    # With gene models: the genes in range of the edit's window and their scores, float32 [G, len(GENE_SCORES),
    # tracks] (None: not scored, or no gene in range); which of them are null is ``gene_validity``'s to say.
    genes: WindowGenes | None = None
    gene_scores: np.ndarray | None = None


@dataclass
class MutagenesisAnswer:
    pos: list[int]
    ref: list[str]
    alt: list[str]
    status: list[str]
    scores: np.ndarray  # float32 [mutants, len(SCORES), tracks]


@dataclass
class _Task:
    kind: str  # "edit", "mutagenesis" or "window"
    payload: Any
    future: Future = field(default_factory=Future)


class Replicas:
    """Model replicas on ``devices``, kept warm, answering edits, mutagenesis and window predictions.

    ``submit_*`` returns a ``Future`` or raises ``QueueFull`` when ``queue_length`` requests already wait.
    ``genes``: gene models; each edit is then also scored on the genes in range of its window (``tss_flank`` as
    ``score-variants --tss-flank``).
    """

    def __init__(self, settings: InferenceSettings, fasta: FastaSource, devices: Sequence[str | None] = (None,),
                 queue_length: int = 16, genes: Annotation | None = None, tss_flank: int = DEFAULT_TSS_FLANK):
        from ..inference import Predictor

        if queue_length < 1:
            raise ValueError(f"--queue must be at least 1, got {queue_length}")
        self.fasta = fasta
        self.genes = genes
        self.tss_flank = tss_flank
        self.lengths = fasta.lengths()
        self.predictors = [Predictor(settings, device=d) for d in devices]
        self.info: ModelInfo = self.predictors[0].info
        self._queue: queue.Queue[_Task] = queue.Queue(maxsize=queue_length)
        self.queue_length = queue_length
        self._running = 0
        self._edits_done = 0  # edits answered, and the score_part calls that answered them
        self._edit_calls = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(p,), name=f"replica-{i}", daemon=True)
                         for i, p in enumerate(self.predictors)]
        for t in self._threads:
            t.start()

    # --- asking -----------------------------------------------------------------------------------
    def submit_edit(self, edit: Edit) -> Future:
        return self._submit(_Task("edit", edit))

    def submit_mutagenesis(self, region: Region) -> Future:
        return self._submit(_Task("mutagenesis", region))

    def submit_window(self, chrom: str, centre: int) -> Future:
        """Predictions ``[output_bins, tracks]`` of the window centred on ``centre`` (the atlas view, no atlas)."""
        return self._submit(_Task("window", (chrom, centre)))

    def _submit(self, task: _Task) -> Future:
        if self._stop.is_set():
            raise RuntimeError("the replicas are shut down")
        try:
            self._queue.put_nowait(task)
        except queue.Full:
            raise QueueFull(f"{self.queue_length} requests are already waiting; try again shortly") from None
        return task.future

    def load(self) -> dict:
        with self._lock:
            return {"running": self._running, "queued": self._queue.qsize(), "queue_limit": self.queue_length,
                    "replicas": len(self.predictors), "edits": self._edits_done, "edit_calls": self._edit_calls}

    def close(self) -> None:
        self._stop.set()
        while True:  # requests still waiting get an answer now (cancelled), not at their time-out
            try:
                self._queue.get_nowait().future.cancel()
            except queue.Empty:
                break
        for _ in self._threads:
            try:
                self._queue.put_nowait(_Task("stop", None))
            except queue.Full:
                break  # the workers see _stop when they next wake
        for t in self._threads:
            t.join(timeout=5)

    # --- the workers ------------------------------------------------------------------------------
    def _work(self, predictor) -> None:
        held: _Task | None = None  # taken off the queue while gathering edits; runs next
        while not self._stop.is_set():
            if held is not None:
                first, held = held, None
            else:
                try:
                    first = self._queue.get(timeout=0.5)
                except queue.Empty:
                    continue
            if first.kind == "stop":
                return
            # Edits that arrived while this replica was busy are taken together (see _run for how they batch).
            tasks = [first]
            while first.kind == "edit" and len(tasks) < MAX_MICRO_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt.kind != "edit":
                    held = nxt
                    break
                tasks.append(nxt)
            with self._lock:
                self._running += len(tasks)
            try:
                self._run(predictor, tasks)
            finally:
                with self._lock:
                    self._running -= len(tasks)
        if held is not None:
            held.future.cancel()

    def _run(self, predictor, tasks: list[_Task]) -> None:
        live = [t for t in tasks if t.future.set_running_or_notify_cancel()]
        if not live:
            return
        if live[0].kind != "edit":
            self._answer(live, lambda: [self._mutagenesis(predictor, live[0].payload) if live[0].kind == "mutagenesis"
                                        else self._window(predictor, *live[0].payload)])
            return
        if predictor.predicts_near:
            # The near path runs one reference window (and its alternates) per device batch whatever is batched:
            # only edits at one position gain from going together; the rest are answered one by one, each as
            # soon as it is done.
            batches: dict[tuple[str, int], list[_Task]] = {}
            for t in live:
                batches.setdefault((t.payload.chrom, t.payload.start), []).append(t)
            groups = list(batches.values())
        else:
            groups = [live]  # fuller device batches
        for group in groups:
            self._answer(group, lambda group=group: self._edits(predictor, [t.payload for t in group]))

    @staticmethod
    def _answer(tasks: list[_Task], compute: Callable[[], list]) -> None:
        try:
            answers = compute()
        except Exception as e:  # noqa: BLE001 - the request fails, the replica keeps serving
            for t in tasks:
                t.future.set_exception(e)
            return
        for t, a in zip(tasks, answers):
            t.future.set_result(a)

    def _edits(self, predictor, edits: list[Edit]) -> list[EditAnswer]:
        """Edits scored by the batch ``edits`` code: one part per chromosome, as ``EditsJob`` plans them."""
        geometry = predictor.info.geometry
        mode = EditMode(self.fasta, geometry.input_length, SCORES)
        answers: list[EditAnswer | None] = [None] * len(edits)
        by_chrom: dict[str, list[int]] = {}
        for i, e in enumerate(edits):
            by_chrom.setdefault(e.chrom, []).append(i)
        for chrom, members in by_chrom.items():
            with self._lock:
                self._edits_done += len(members)
                self._edit_calls += 1
            part = EditPart(chrom, 0, len(members), self.lengths[chrom], tuple(edits[i] for i in members))
            inputs: VariantInputs = mode.read(part)
            kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            windows = self._gene_windows(geometry, part, inputs) if self.genes is not None else None
            reducer = GeneReducer(windows, inputs.group, GENE_SCORES, predictor.device) if windows else None

            def keep(j: int, ref, alt, kept=kept, reducer=reducer) -> None:
                if reducer is not None:  # on the device, before the copies to the host
                    reducer(j, ref, alt)
                kept[j] = (ref.float().cpu().numpy(), alt.float().cpu().numpy())

            result = score_part(predictor, inputs, SCORES, predictions=keep)
            check_finite(result, f"{chrom} edits")
            gene_values = reducer.collect(len(inputs.rows)) if reducer is not None else None
            scored = {int(row): j for j, row in enumerate(result.rows)}
            for k, i in enumerate(members):
                e = edits[i]
                first_bp = e.start - geometry.input_length // 2 + geometry.context
                j = scored.get(k)
                if j is None:
                    answers[i] = EditAnswer(result.statuses[k], None, None, None, first_bp)
                    continue
                ref, alt = kept[j]
                answer = EditAnswer(result.statuses[k], result.scores[j], ref, alt, first_bp)
                if windows is not None and gene_values is not None:
                    answer.genes = windows[int(inputs.group[j])]
                    answer.gene_scores = gene_values[j]
                    if answer.gene_scores is not None and not np.isfinite(answer.gene_scores).all():
                        raise RunError(f"{chrom} edits: the model returned NaN or infinity for a gene score")
                answers[i] = answer
        return answers  # type: ignore[return-value]

    def _gene_windows(self, geometry, part: EditPart, inputs: VariantInputs) -> list[WindowGenes]:
        """Each reference window's genes in range and their bin masks, as ``VariantMode.read`` builds them for
        ``score-variants --genes`` (an edit's window is the variant window of ``pos = start + 1``)."""
        half = geometry.input_length // 2
        centres: dict[int, int] = {}
        for j, i in enumerate(inputs.rows):
            centres[int(inputs.group[j])] = half + part.edits[int(i)].start - int(inputs.offset[j])
        genes = self.genes.on(part.chrom)  # type: ignore[union-attr]
        return [window_genes(genes, window_origin(centres[g], geometry), geometry, self.tss_flank)
                for g in range(len(inputs.windows))]

    def _mutagenesis(self, predictor, region: Region) -> MutagenesisAnswer:
        """Every SNV of a region, as one part of the batch ``mutagenesis`` command (its positions_per_part is
        larger than any region ``serve`` accepts)."""
        mode = MutagenesisMode(self.fasta, predictor.info.geometry.input_length, SCORES)
        part = MutagenesisPart(region.chrom, 0, region, region.start, region.end, self.lengths[region.chrom])
        labels, result = mode.infer(predictor, part, mode.read(part))
        return MutagenesisAnswer(labels.pos, labels.ref, labels.alt, result.statuses, result.scores)

    def _window(self, predictor, chrom: str, centre: int) -> tuple[np.ndarray, int]:
        geometry = predictor.info.geometry
        half = geometry.input_length // 2
        fasta = self.fasta.open()
        try:
            codes = read_codes(fasta, chrom, self.lengths[chrom], centre - half, centre + half)
        finally:
            fasta.close()
        values, _ = predictor.predict(codes[None])
        return values[0].astype(np.float32), centre - half + geometry.context

