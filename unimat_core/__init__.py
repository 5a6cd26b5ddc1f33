"""UniMat science core: representation, datasets, model, metrics. Never imports Prefect."""

__version__ = "0.1.0"
