"""Generation benchmark metrics (CDVAE's validity, coverage and EMDs; uniqueness and novelty).

Plain Python, no Prefect: `tasks/evaluate.py` wraps `evaluate_structures` + `write_metrics`.
"""

from unimat_core.metrics.evaluate import (
    MetricsConfig,
    MetricsError,
    MetricsResult,
    evaluate_structures,
    read_metrics,
    write_metrics,
)
from unimat_core.metrics.validity import composition_validity, structure_validity

__all__ = [
    "MetricsConfig",
    "MetricsError",
    "MetricsResult",
    "composition_validity",
    "evaluate_structures",
    "read_metrics",
    "structure_validity",
    "write_metrics",
]
