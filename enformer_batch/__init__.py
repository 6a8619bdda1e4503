"""enformer-batch: genome-wide batch prediction of sequence-to-function models on Ray, into Parquet atlases.

Pipeline, one module per stage: ``genome`` (FASTA, index, encoding) → ``windows`` (tiling, stitching) →
``families`` / ``model`` / ``borzoi`` (Enformer and Borzoi: geometry,
weights, tracks) → ``inference`` (the model call on one device) → ``predict`` (Ray
orchestration) → ``store`` (Parquet parts, manifest) → ``atlas`` (validate, query). ``cli`` sits on top.
"""

__version__ = "0.1.0"

# The function `predict` shadows the module of the same name on purpose: `enformer_batch.predict(...)`.
from .atlas import ValidationReport, validate  # noqa: E402
from .predict import PredictConfig, RunSummary, predict  # noqa: E402
from .query import Atlas, open_atlas  # noqa: E402

__all__ = [
    "Atlas", "PredictConfig", "RunSummary", "ValidationReport", "open_atlas", "predict", "validate",
    "__version__",
]
