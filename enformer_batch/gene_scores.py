"""Gene-level scores of a window: which output bins belong to each gene in range, and the sums over them.

Owns the arithmetic of docs/contract.md, "Genes": a window's output bin ``b`` covers ``[o + b*bin_size,
o + (b+1)*bin_size)``; a gene's exon bins ``B_g`` are the bins that overlap its exons by at least one base, its
TSS bins ``T_g`` the bins within ``tss_flank`` of the bin of one of its TSSs (a TSS just outside the output still
brings the flank bins that are inside); a gene is in range when ``B_g ∪ T_g`` is not empty. Scores per gene and
track: ``sed = Σ_{B_g}(A − R)``, ``logsed = log2(Σ_{B_g} A + 1) − log2(Σ_{B_g} R + 1)``, and ``tss``/``logtss``
alike over ``T_g``; a score over an empty bin set is null, and so is a (gene, track) pair whose strands do not
match (a + gene is scored on + and unstranded tracks, a − gene on − and unstranded ones).

The masks are built here on the host, once per window (``window_genes``); ``gene_scores`` and
``gene_expression`` apply them where the predictions are, in float64 and from per-bin differences, so only
(genes × tracks) numbers leave the device. Which entries are null is known on the host (``gene_validity``):
the device never returns NaN for them. No Ray, no I/O; torch only inside the device functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .annotation import ChromGenes, Gene
from .windows import Geometry

GENE_SCORES = ("sed", "logsed", "tss", "logtss")
EXON_SCORES = ("sed", "logsed")  # over B_g; the others over T_g
DEFAULT_TSS_FLANK = 1  # three bins per TSS
DEFAULT_GENE_SCORES = ("logsed",)
# The columns a variant table gains with --genes, after ``status``.
GENE_FIELDS = (
    pa.field("gene_id", pa.string()), pa.field("gene_name", pa.string()), pa.field("gene_strand", pa.string()),
    pa.field("tss_distance", pa.int64()),
)


def check_tss_flank(tss_flank: int) -> None:
    if tss_flank < 0:
        raise ValueError(f"--tss-flank must be 0 or more bins, got {tss_flank}")


def track_strands(identifiers: Sequence[str], strand_column: Sequence[str] | None = None) -> tuple[str, ...]:
    """Each track's strand, ``+``, ``-`` or ``""`` (unstranded).

    From the track table's ``strand`` column where it has one (any value other than ``+``/``-`` is unstranded),
    else from the identifier's last character (Borzoi's ``CNhs10608+``), else unstranded.
    """
    if strand_column is not None:
        if len(strand_column) != len(identifiers):
            raise ValueError(f"strand column has {len(strand_column)} values for {len(identifiers)} tracks")
        return tuple(s.strip() if s.strip() in ("+", "-") else "" for s in strand_column)
    return tuple(name[-1] if name[-1:] in ("+", "-") else "" for name in identifiers)


def tracks_on_strand(gene_strand: str, strands: Sequence[str]) -> np.ndarray:
    """bool [tracks]: the tracks a gene of ``gene_strand`` (``+``/``-``) is scored on: its own strand's and the
    unstranded ones (``strands`` as ``track_strands`` gives them)."""
    if gene_strand not in ("+", "-"):
        raise ValueError(f"a gene's strand is + or -, got {gene_strand!r}")
    return np.asarray([s in ("", gene_strand) for s in strands], bool)


def window_origin(centre: int, geometry: Geometry) -> int:
    """Genome position of the first output base of a window whose input index ``input_length // 2`` is ``centre``
    (for a variant, ``p − (output_bins // 2) * bin_size``: its first base opens bin ``output_bins // 2``)."""
    return centre - geometry.input_length // 2 + geometry.context


def exon_bins(gene: Gene, origin: int, bin_size: int, n_bins: int) -> np.ndarray:
    """``B_g`` as a bool mask over the window's output bins."""
    mask = np.zeros(n_bins + 1, np.int32)
    a, b = gene.exons[:, 0], gene.exons[:, 1]
    inside = (a < origin + n_bins * bin_size) & (b > origin)
    first = np.clip((a[inside] - origin) // bin_size, 0, n_bins - 1)
    last = np.clip((b[inside] - 1 - origin) // bin_size, 0, n_bins - 1)
    np.add.at(mask, first, 1)
    np.add.at(mask, last + 1, -1)
    return np.cumsum(mask[:n_bins]) > 0


def tss_bins(gene: Gene, origin: int, bin_size: int, n_bins: int, tss_flank: int) -> np.ndarray:
    """``T_g`` as a bool mask: bins within ``tss_flank`` of the bin of any TSS, the TSS itself possibly outside."""
    mask = np.zeros(n_bins + 1, np.int32)
    centre = (gene.tss - origin) // bin_size  # floor division: a TSS left of the origin has a negative bin
    first, last = centre - tss_flank, centre + tss_flank
    inside = (last >= 0) & (first < n_bins)
    np.add.at(mask, np.clip(first[inside], 0, n_bins - 1), 1)
    np.add.at(mask, np.clip(last[inside], 0, n_bins - 1) + 1, -1)
    return np.cumsum(mask[:n_bins]) > 0


@dataclass(frozen=True)
class WindowGenes:
    """The genes in range of one window, ordered by gene_id (then strand), and their host bin masks."""

    origin: int
    genes: tuple[Gene, ...]
    exon_mask: np.ndarray  # bool [G, bins]
    tss_mask: np.ndarray  # bool [G, bins]

    def __len__(self) -> int:
        return len(self.genes)

    @property
    def strands(self) -> np.ndarray:
        """int8 [G]: +1 / −1."""
        return np.asarray([1 if g.strand == "+" else -1 for g in self.genes], np.int8)


def window_genes(genes: ChromGenes, origin: int, geometry: Geometry, tss_flank: int = DEFAULT_TSS_FLANK,
                 ) -> WindowGenes:
    """The genes in range of the window whose output starts at ``origin``, with their ``B_g`` and ``T_g`` masks."""
    check_tss_flank(tss_flank)
    s, n = geometry.bin_size, geometry.output_bins
    # A TSS brings bins of the output while its own bin is within tss_flank of it; exons while they overlap it.
    near = genes.overlapping(origin - tss_flank * s, origin + (n + tss_flank) * s)
    found = []
    for i in near:
        gene = genes.gene(int(i))
        exon = exon_bins(gene, origin, s, n)
        tss = tss_bins(gene, origin, s, n, tss_flank)
        if exon.any() or tss.any():
            found.append((gene, exon, tss))
    found.sort(key=lambda item: (item[0].gene_id, item[0].strand))
    if not found:
        empty = np.zeros((0, n), bool)
        return WindowGenes(origin, (), empty, empty)
    return WindowGenes(origin, tuple(f[0] for f in found), np.stack([f[1] for f in found]),
                       np.stack([f[2] for f in found]))


def gene_validity(window: WindowGenes, strands: Sequence[str], scores: Sequence[str]) -> np.ndarray:
    """bool [G, len(scores), tracks]: which gene scores hold a value (the rest are null).

    Null where the track's strand is the other one than the gene's, and where the score's bin set is empty.
    """
    track = np.asarray([1 if s == "+" else -1 if s == "-" else 0 for s in strands], np.int8)
    strand_ok = (track[None, :] == 0) | (track[None, :] == window.strands[:, None])  # [G, T]
    exon_any, tss_any = window.exon_mask.any(axis=1), window.tss_mask.any(axis=1)
    out = np.empty((len(window), len(scores), len(track)), bool)
    for k, name in enumerate(scores):
        if name not in GENE_SCORES:
            raise ValueError(f"unknown gene score {name!r}")
        has_bins = exon_any if name in EXON_SCORES else tss_any
        out[:, k] = strand_ok & has_bins[:, None]
    return out


def gene_scores(ref, alt, exon_mask, tss_mask, scores: Sequence[str]):
    """Gene scores of alternates against their shared reference, on the predictions' device.

    ``ref [bins, T]`` and ``alt [n, bins, T]`` (fp32 predictions), ``exon_mask``/``tss_mask [G, bins]`` (any
    dtype, on the same device) → ``[n, G, len(scores), T]`` float32, summed in float64; ``sed`` and ``tss`` from
    per-bin differences. Entries ``gene_validity`` calls null hold a finite value that means nothing.
    """
    import torch

    r, a = ref.double(), alt.double()
    diff = a - r.unsqueeze(0)
    masks = {"exon": exon_mask.double(), "tss": tss_mask.double()}
    out = []
    for name in scores:
        m = masks["exon" if name in EXON_SCORES else "tss"]
        if name in ("sed", "tss"):
            out.append(torch.einsum("gb,nbt->ngt", m, diff))
        elif name in ("logsed", "logtss"):
            out.append(torch.log2(torch.einsum("gb,nbt->ngt", m, a) + 1)
                       - torch.log2((m @ r).unsqueeze(0) + 1))
        else:
            raise ValueError(f"unknown gene score {name!r}")
    if not out:
        raise ValueError("gene_scores needs at least one score")
    return torch.stack(out, dim=2).float()


def gene_expression(ref, exon_mask, tss_mask):
    """``predict-genes``' sums of a reference prediction ``[bins, T]``: ``[G, 2, T]`` float32, (``Σ_{T_g} R``,
    ``Σ_{B_g} R``), accumulated in float64 on the predictions' device."""
    import torch

    r = ref.double()
    return torch.stack([tss_mask.double() @ r, exon_mask.double() @ r], dim=1).float()


def exon_fraction(gene: Gene, lo: int, hi: int) -> float:
    """Share of the gene's exonic bases inside ``[lo, hi)`` (a window's output span)."""
    a = np.clip(gene.exons[:, 0], lo, hi)
    b = np.clip(gene.exons[:, 1], lo, hi)
    return float((b - a).sum() / gene.exon_bases())


# --- gene rows of a variant table -------------------------------------------------------------------------


def genes_near(genes: ChromGenes, centres: Sequence[int], geometry: Geometry, tss_flank: int) -> ChromGenes:
    """The genes that may be in range of windows centred on ``centres``: what a part of variants ships with it,
    so a reader task never needs the whole annotation."""
    s, n = geometry.bin_size, geometry.output_bins
    found: set[int] = set()
    for c in centres:
        origin = window_origin(c, geometry)
        found.update(genes.overlapping(origin - tss_flank * s, origin + (n + tss_flank) * s).tolist())
    return genes.subset(np.asarray(sorted(found), np.int64))


def split_scores(scores: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``--scores`` → (gene scores, variant scores), each in the order given."""
    return tuple(s for s in scores if s in GENE_SCORES), tuple(s for s in scores if s not in GENE_SCORES)


class GeneReducer:
    """Gene scores of one part's alleles on the device: each window's masks go to the device once, and each
    allele's ``[G, scores, tracks]`` stays there until the part is done (then ``collect`` copies them back)."""

    def __init__(self, windows: Sequence[WindowGenes], group: Sequence[int], scores: Sequence[str], device):
        self.windows, self.group, self.scores, self.device = windows, group, tuple(scores), device
        self._masks: dict[int, tuple] = {}
        self.values: dict[int, object] = {}  # scored-allele index -> tensor [G, S, T]

    def __call__(self, allele: int, ref, alt) -> None:
        """Scored allele ``allele`` (predicted in window ``group[allele]``): ``ref``, ``alt`` ``[bins, T]``."""
        import torch

        group = int(self.group[allele])
        window = self.windows[group]
        if not len(window):
            return
        if group not in self._masks:
            self._masks[group] = (torch.tensor(window.exon_mask, device=self.device),
                                  torch.tensor(window.tss_mask, device=self.device))
        exon, tss = self._masks[group]
        self.values[allele] = gene_scores(ref, alt.unsqueeze(0), exon, tss, self.scores)[0]

    def collect(self, n_alleles: int) -> list[np.ndarray | None]:
        return [self.values[j].cpu().numpy() if j in self.values else None for j in range(n_alleles)]


def variant_gene_table(
    leading: Sequence[Sequence],
    schema,
    statuses: Sequence[str],
    positions: Sequence[int],
    scored: Sequence[int],
    windows: Sequence[WindowGenes],
    window_of: Sequence[int],
    gene_values: Sequence[np.ndarray | None],
    variant_values: np.ndarray,
    scores: Sequence[str],
    strands: Sequence[str],
):
    """The rows of a ``score-variants --genes`` part: one per (allele, gene in range), ordered as the contract says.

    ``leading``: per allele, the values of the schema's leading columns before the gene columns (pos, id, ref,
    alt); ``statuses`` per allele. Scored allele ``scored[j]`` (0-based position ``positions``) was predicted in
    window ``windows[window_of[j]]``; its gene scores are ``gene_values[j]`` ``[G, gene scores, tracks]`` and its
    variant scores ``variant_values[j]`` ``[variant scores, tracks]``. A scored allele with no gene in range gets
    one row, status ``no_gene``; an allele not scored one row with its own status; both with null gene columns.
    """
    gene_names, variant_names = split_scores(scores)
    n_tracks = len(strands)
    n_leading = len(leading)
    which = {name: ("gene", k) for k, name in enumerate(gene_names)}
    which.update({name: ("variant", k) for k, name in enumerate(variant_names)})
    slot = {a: j for j, a in enumerate(scored)}
    cols: list[list] = [[] for _ in range(n_leading + 5)]  # leading..., status, gene_id, gene_name, strand, tss_d
    value_blocks, valid_blocks = [], []
    for a in range(len(statuses)):
        j = slot.get(a)
        window = windows[window_of[j]] if j is not None else None
        genes = window.genes if window is not None else ()
        n_rows = max(1, len(genes))
        for c in range(n_leading):
            cols[c] += [leading[c][a]] * n_rows
        values = np.zeros((n_rows, len(scores), n_tracks), np.float32)
        valid = np.zeros((n_rows, len(scores), n_tracks), bool)
        if j is None:
            cols[n_leading] += [statuses[a]]
            cols[n_leading + 1] += [None]
            cols[n_leading + 2] += [None]
            cols[n_leading + 3] += [None]
            cols[n_leading + 4] += [None]
        else:
            gene_valid = gene_validity(window, strands, gene_names) if genes else None
            for k, name in enumerate(scores):
                kind, index = which[name]
                if kind == "variant":
                    values[:, k] = variant_values[j, index]
                    valid[:, k] = True
                elif genes:
                    values[:, k] = gene_values[j][:, index]
                    valid[:, k] = gene_valid[:, index]
            if genes:
                cols[n_leading] += [statuses[a]] * n_rows
                cols[n_leading + 1] += [g.gene_id for g in genes]
                cols[n_leading + 2] += [g.gene_name for g in genes]
                cols[n_leading + 3] += [g.strand for g in genes]
                cols[n_leading + 4] += [g.tss_distance(positions[a]) for g in genes]
            else:
                cols[n_leading] += ["no_gene"]
                cols[n_leading + 1] += [None]
                cols[n_leading + 2] += [None]
                cols[n_leading + 3] += [None]
                cols[n_leading + 4] += [None]
        value_blocks.append(values.reshape(n_rows, -1))
        valid_blocks.append(valid.reshape(n_rows, -1))
    n_values = len(scores) * n_tracks
    values = np.concatenate(value_blocks) if value_blocks else np.zeros((0, n_values), np.float32)
    valid = np.concatenate(valid_blocks) if valid_blocks else np.zeros((0, n_values), bool)
    arrays = [pa.array(col, schema.field(i).type) for i, col in enumerate(cols)]
    arrays += [pa.array(values[:, c], pa.float32(), mask=~valid[:, c]) for c in range(n_values)]
    return pa.Table.from_arrays(arrays, schema=schema)
