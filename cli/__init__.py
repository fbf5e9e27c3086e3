"""The ``churn`` command line (``cli.main:app``).

MLflow's own chatter (INFO lines, artifact progress bars) would bury the commands' reports; it is
quieted unless the user set those MLflow variables.
"""

import os

os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
