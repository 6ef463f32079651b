"""Weight sharing: one supernet trained for a whole space, every genome of it run and scored on the shared
weights, and winners extracted as standalone models. See ``nas.supernet.supernet`` and ``nas.supernet.train``."""
from nas.supernet.supernet import (
    Supernet,
    SupernetCoverageError,
    coverage_genomes,
    recalibrate_norms,
)
from nas.supernet.train import (
    SupernetTrainOptions,
    SupernetTrainResult,
    inherited_accuracy,
    sample_genome,
    train_supernet,
)

__all__ = ["Supernet", "SupernetCoverageError", "SupernetTrainOptions", "SupernetTrainResult",
           "coverage_genomes", "inherited_accuracy", "recalibrate_norms", "sample_genome", "train_supernet"]
