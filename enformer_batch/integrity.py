"""What an atlas was computed from, and the checks that keep one atlas from mixing two of anything.

Owns the run identity's versioning and the checks around it:

- ``NUMERICS_VERSION``: bumped (by hand, with a line in the README) whenever a change makes the same inputs
  give other output values. The identity records it instead of the package version, so a patch release
  resumes an atlas and a numerics change refuses to.
- Weights: every replica compares the sha256 of the weights it loaded with the one the manifest records and
  refuses to predict on a mismatch (``check_weights``).
- Genome: each part records the digest of the base codes it was predicted from; a resume re-reads the codes
  under the committed parts and refuses a FASTA whose bases differ (``verify_genome``), and
  ``validate --fasta`` does the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

# 1: the numerics of enformer-batch 0.1 (nearest-centre stitching, N as zeros or uniform, fp32 reference).
NUMERICS_VERSION = 1


class WeightsMismatch(ValueError):
    """A replica loaded other weights than the run records."""


class GenomeMismatch(ValueError):
    """The FASTA's bases differ from those a committed part was predicted from."""


def check_weights(loaded_sha256: str, expected_sha256: str | None, source: str) -> None:
    """Refuse weights whose sha256 is not the one the run records (None: nothing recorded yet)."""
    if expected_sha256 and loaded_sha256 != expected_sha256:
        raise WeightsMismatch(
            f"the weights this replica loaded from {source} (sha256 {loaded_sha256[:12]}...) are not the ones "
            f"the run records (sha256 {expected_sha256[:12]}...): the checkpoint changed or a node holds a stale "
            "copy; refusing to predict, so that one atlas never mixes two models"
        )


def comparable_identity(identity: Mapping | None) -> dict:
    """A recorded identity in today's terms, so that an atlas of an earlier release resumes: manifests written
    before ``numerics_version`` existed carried the package version instead (their numerics are version 1),
    recorded the genome's file name with its format endings, and knew one model family."""
    from .genome import genome_name

    identity = dict(identity or {})
    if "numerics_version" not in identity and "engine_version" in identity:
        identity.pop("engine_version")
        identity["numerics_version"] = 1
    fasta = identity.get("fasta")
    if isinstance(fasta, Mapping) and isinstance(fasta.get("name"), str):  # "hg38.fa" was recorded as such once
        identity["fasta"] = {**fasta, "name": genome_name(fasta["name"])}
    model = identity.get("model")
    if isinstance(model, Mapping) and "family" not in model:  # before Borzoi: one Enformer checkpoint
        identity["model"] = {**model, "family": "enformer", "unsquash": False,
                             "replicates": [{"id": model.get("id"), "weights_sha256": model.get("weights_sha256")}]}
    return identity


def refusal(out: str, old: Mapping, new: Mapping) -> str:
    """One line saying why ``--out`` holds another run, most decisive difference first."""
    hint = "pass --overwrite to replace it, or choose another --out"
    if old.get("numerics_version") != new.get("numerics_version"):
        return (f"--out {out} was computed with numerics version {old.get('numerics_version')} and this "
                f"enformer-batch computes version {new.get('numerics_version')} (its output values differ); "
                f"{hint}")
    old_model, new_model = old.get("model") or {}, new.get("model") or {}
    old_sha, new_sha = str(old_model.get("weights_sha256")), str(new_model.get("weights_sha256"))
    if old_sha != new_sha and old_model.get("id") == new_model.get("id"):
        return (f"--out {out}: the weights at {new_model.get('id')} changed since this atlas was started (sha256 "
                f"{old_sha[:12]}... recorded, {new_sha[:12]}... now); use the original weights, or {hint}")
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return f"--out {out} holds a run with another configuration ({', '.join(keys) or 'format'} differ); {hint}"


def part_codes_digest(mode, part) -> str:
    """The digest of a part's base codes as the mode's reader stage produces them (a Ray task runs this)."""
    return mode.digest(mode.read(part))


def verify_genome(out: str, records: Mapping, parts: Iterable, path_of: Callable[[Any], str], mode,
                  in_flight: int = 256) -> None:
    """Before a resume: re-read the codes under every committed part in Ray tasks and compare digests.

    ``parts``: the run's parts in plan order, iterated once (a variant table's are re-streamed from its VCF:
    at most ``in_flight`` of them, each with its rows, are held at a time); ``path_of``: a part's path, the
    key of ``records``. Costs one read of the FASTA under the committed parts (hg38: ~5 GB of codes with the
    windows' context), spread over the cluster's CPUs; raises ``GenomeMismatch`` naming the first differing
    part in plan order.
    """
    import ray

    if not any(r.codes_sha256 for r in records.values()):
        return
    task = ray.remote(part_codes_digest).options(num_cpus=1, max_retries=3)
    mode_ref = ray.put(mode)
    pending: dict = {}  # ref -> (plan order, part, recorded digest)
    bad: list[tuple[int, Any]] = []

    def settle(refs) -> None:
        try:
            digests = ray.get(refs)
        except ray.exceptions.RayTaskError as e:  # e.g. the FASTA is unreadable: say that, not Ray's wrapper
            raise (e.cause if e.cause is not None else e) from None
        for ref, digest in zip(refs, digests):
            order, part, recorded = pending.pop(ref)
            if digest != recorded:
                bad.append((order, part))

    for order, part in enumerate(parts):
        record = records.get(path_of(part))
        if record is None or not record.codes_sha256:
            continue
        pending[task.remote(mode_ref, part)] = (order, part, record.codes_sha256)
        if len(pending) >= in_flight:
            ready, _ = ray.wait(list(pending), num_returns=1)
            settle(ready)
    settle(list(pending))
    if bad:
        first = min(bad, key=lambda item: item[0])[1]
        raise GenomeMismatch(
            f"--out {out} was computed from another genome: the bases under {len(bad)} committed part(s) differ "
            f"from {mode.fasta.url} (first: {first.chrom} {mode.unit}s {first.first}-{first.end - 1}), "
            "though names and lengths agree (another masking or build?); use the original FASTA, or pass "
            "--overwrite"
        )
