"""Where models live by default: the MLflow tracking URI and the registered model's name.

Training (which writes the registry), serving (which reads it) and the CLI resolve them here, so
a model trained with the defaults is the model served with the defaults.
"""

from __future__ import annotations

import os

#: A SQLite file in the working directory (artifacts go beside it, in ``mlartifacts/``).
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: The registered model of the built-in data contract.
DEFAULT_MODEL_NAME = "churn-risk"
CHAMPION = "champion"
CHALLENGER = "challenger"


def tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI: explicit, else ``MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def champion_uri(model_name: str = DEFAULT_MODEL_NAME) -> str:
    """The URI of a registered model's champion (what serving loads by default)."""
    return f"models:/{model_name}@{CHAMPION}"
