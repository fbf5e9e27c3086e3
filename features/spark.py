"""Apache Spark for the feature builder and batch scoring: a session (made here or the caller's)
and the Ibis connection the builder runs on.

PySpark is an optional dependency (``pip install "churn-risk[spark]"``): it is imported only when
Spark is asked for, and its absence is one clear error naming the extra.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ibis
    from pyspark.sql import SparkSession

#: The engines the feature builder runs on.
ENGINES = ("duckdb", "spark")
DEFAULT_MASTER = "local[*]"
INSTALL_HINT = 'pip install "churn-risk[spark]"'


class SparkUnavailable(RuntimeError):
    """PySpark (or Ibis's PySpark backend) is not installed."""


def require_pyspark() -> None:
    """Import PySpark and Ibis's PySpark backend, or say which extra installs them."""
    try:
        import ibis.backends.pyspark  # noqa: F401
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise SparkUnavailable(
            f"the Spark engine needs PySpark and Ibis's PySpark backend ({exc.name} is not "
            f"installed): {INSTALL_HINT}") from exc


def spark_session(master: str = DEFAULT_MASTER, app_name: str = "churn-risk",
                  config: dict[str, Any] | None = None) -> SparkSession:
    """A SparkSession on ``master`` (``local[*]``, ``spark://host:7077``, ``yarn`` ...), or the
    running one (as it was configured, plus ``config``). Its Python workers run this interpreter
    unless $PYSPARK_PYTHON says otherwise (the scoring UDF needs the model's libraries there)."""
    require_pyspark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.showConsoleProgress", "false")
               # pandas frames cross to the JVM as Arrow batches, not row by row.
               .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    fresh = local_defaults(master) if SparkSession.getActiveSession() is None else {}
    config = {**fresh, **(config or {})}
    for key, value in config.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def local_defaults(master: str) -> dict[str, str]:
    """Settings for a local master (``local``, ``local[N]``, ``local[*]``): two shuffle
    partitions per core instead of Spark's 200, whose per-task costs dominate on one machine. A
    cluster keeps Spark's defaults (docs/scale-out.md says how to size them)."""
    found = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\s*\d+)?\])?", master.strip())
    if not found:
        return {}
    cores = found.group(1)
    cores = int(cores) if cores and cores != "*" else (os.cpu_count() or 1) if cores else 1
    return {"spark.sql.shuffle.partitions": str(2 * cores)}


def connect(session: SparkSession) -> ibis.BaseBackend:
    """Ibis on ``session``. Timestamps in the contract are naive UTC: the session's time zone is
    set to UTC so that Spark reads them as DuckDB does (days are counted from the epoch)."""
    require_pyspark()
    import ibis

    session.conf.set("spark.sql.session.timeZone", "UTC")
    return ibis.pyspark.connect(session)
