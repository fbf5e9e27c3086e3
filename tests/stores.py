"""Empty MLflow SQLite stores for tests, copied from one made per session.

MLflow runs its schema migrations when it first opens a new SQLite file (about 3 s here). Tests
that only need an empty store copy a file migrated once instead; it is the same real store.
`churn demo`, the end-to-end test and the tests of a failed run still let MLflow create theirs.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_template: Path | None = None


def empty_mlflow_store(db: Path) -> str:
    """Put an empty, migrated MLflow store at ``db`` (a SQLite file); returns its tracking URI."""
    global _template
    if _template is None:
        from mlflow import MlflowClient

        directory = Path(tempfile.mkdtemp(prefix="churn-mlflow-template-"))
        atexit.register(shutil.rmtree, directory, True)
        template = directory / "mlflow.db"
        MlflowClient(f"sqlite:///{template}").search_experiments()  # creates and migrates it
        _template = template
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template, db)
    return f"sqlite:///{db}"
