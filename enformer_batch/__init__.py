"""enformer-batch: genome-wide batch prediction of sequence-to-function models on Ray, into Parquet atlases.

Pipeline, one module per stage: ``genome`` (FASTA, bgzip, 2bit; index; encoding) → work units: ``windows``
(tiling, stitching), ``vcf`` (variant rows) → ``families`` / ``model`` / ``borzoi`` / ``loader`` (Enformer and
Borzoi: geometry, weights, tracks) → ``inference`` (the model call on one device) → ``engine`` (Ray orchestration,
resume, commit; mode-agnostic) with its modes ``predict`` (genome atlases), ``variants`` (variant scores) and
``experiments`` (mutagenesis, edits) → ``store`` (Parquet parts, manifest) → ``validate`` (checking an
output against its manifest), ``atlas`` (``Atlas``, ``open_atlas``: queries) and ``export`` (bigWig, plots).
``cli`` sits on top.
"""

# The function `predict` shadows the module of the same name on purpose: `enformer_batch.predict(...)`.
from .atlas import Atlas, open_atlas  # noqa: E402
from .predict import PredictConfig, RunSummary, predict  # noqa: E402
from .validate import ValidationReport, validate  # noqa: E402
from .variants import VariantConfig, score_variants  # noqa: E402
from .version import __version__  # noqa: E402 - one definition, importable from any layer

__all__ = [
    "Atlas", "PredictConfig", "RunSummary", "ValidationReport", "VariantConfig", "open_atlas", "predict",
    "score_variants", "validate",
    "__version__",
]
