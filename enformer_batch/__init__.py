"""enformer-batch: genome-wide batch prediction of sequence-to-function models on Ray, into Parquet atlases.

Layers, low to high (``tests/test_architecture.py`` holds the map): ``retry``, ``genome`` (FASTA, bgzip, 2bit;
index; encoding), ``windows`` (tiling, stitching), ``regions`` (regions, BED), ``tracks``, ``vcf``, ``version``,
``units`` → ``families`` / ``model`` / ``borzoi`` / ``loader`` (Enformer and Borzoi: geometry, weights, tracks),
``settings``, ``integrity`` → ``inference`` (the model call on one device) → ``store`` (Parquet parts,
manifest), ``lease`` → ``engine`` (Ray orchestration, resume, commit; kind-agnostic) → ``kinds`` (one module
per job kind: ``atlas``, ``variants``, ``mutagenesis``, ``edits``, ``attribution``, and the ``scoring`` core
they share; ``attribution`` the gradients on one device, beside ``inference``) → ``validate`` (checking an output
of any kind against its manifest), ``atlas`` (``Atlas``, ``open_atlas``: queries), ``export`` (bigWig, plots,
attribution exports) and ``estimate`` (dry-run costs) → ``cli``.
"""

from .atlas import Atlas, open_atlas  # noqa: E402
from .engine import RunSummary  # noqa: E402
from .kinds import KINDS, Kind  # noqa: E402
from .kinds.atlas import AtlasConfig, PredictConfig, predict  # noqa: E402
from .kinds.attribution import AttributionConfig, attribute  # noqa: E402
from .kinds.edits import EditsConfig, edits  # noqa: E402
from .kinds.genes import GenesConfig, predict_genes  # noqa: E402
from .kinds.mutagenesis import MutagenesisConfig, mutagenesis  # noqa: E402
from .kinds.variants import VariantConfig, score_variants  # noqa: E402
from .validate import ValidationReport, validate  # noqa: E402
from .version import __version__  # noqa: E402 - one definition, importable from any layer

__all__ = [
    "KINDS", "Atlas", "AtlasConfig", "AttributionConfig", "EditsConfig", "GenesConfig", "Kind", "MutagenesisConfig",
    "PredictConfig", "RunSummary", "ValidationReport", "VariantConfig", "attribute", "edits", "mutagenesis",
    "open_atlas", "predict", "predict_genes", "score_variants", "validate",
    "__version__",
]
