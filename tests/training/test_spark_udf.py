"""The logged pyfunc returns the same calibrated probabilities through `mlflow.pyfunc.spark_udf`
(a real local Spark session, the model run in Spark's Python workers) as in process."""

from __future__ import annotations

import math
import os
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql.functions import monotonically_increasing_id
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from features.rows import feature_rows

pytestmark = [
    pytest.mark.e2e,
    # PySpark 4.x warns about pandas 3 (support, and its own use of a deprecated `copy=`); the
    # UDF path used here works, and the test checks its results.
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]


@pytest.fixture(scope="module")
def spark():
    # Spark's Python workers run $PYSPARK_PYTHON (else whatever `python3` is on PATH): make it
    # this interpreter, where mlflow, lightgbm and pandas live.
    saved = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (SparkSession.builder
               .master("local[1]")
               .appName("churn-risk-spark-udf-test")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "1")
               .config("spark.default.parallelism", "1")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        if saved is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = saved


def _features(default_tables, rows: int) -> pd.DataFrame:
    frame = feature_rows(default_tables).head(rows)
    features = frame.drop(columns=["account_id", "as_of"]).astype(object)
    return features.where(features.notna(), None)


def test_spark_udf_returns_the_same_probabilities_as_in_process(
        spark, registered_model, default_tables) -> None:
    uri = f"models:/churn-risk/{registered_model.version}"
    mlflow.set_tracking_uri(registered_model.tracking_uri)
    features = _features(default_tables, 50)
    # Real rows with missing values, in numeric and in categorical (string) columns alike.
    assert features.isna().any().any()
    categorical = [c for c in features.columns
                   if any(isinstance(v, str) for v in features[c])]
    assert categorical and features[categorical].isna().any().any()

    schema = StructType([StructField(c, StringType() if c in categorical else DoubleType(), True)
                         for c in features.columns])
    rows = [tuple(None if v is None or (isinstance(v, float) and math.isnan(v))
                  else (str(v) if c in categorical else float(v))
                  for c, v in zip(features.columns, row, strict=True))
            for row in features.itertuples(index=False, name=None)]
    sdf = spark.createDataFrame(rows, schema=schema)

    predict = mlflow.pyfunc.spark_udf(spark, uri, env_manager="local", result_type="double")
    scored = (sdf.withColumn("row", monotonically_increasing_id())
              .withColumn("churn_probability", predict(*features.columns))
              .select("row", "churn_probability")
              .toPandas().sort_values("row"))
    via_spark = scored["churn_probability"].to_numpy(dtype=float)

    in_process = np.asarray(mlflow.pyfunc.load_model(uri).predict(features), dtype=float)
    assert len(via_spark) == len(in_process) == 50
    assert ((via_spark >= 0) & (via_spark <= 1)).all()
    assert len(np.unique(via_spark)) > 10
    np.testing.assert_allclose(via_spark, in_process, rtol=0, atol=1e-9)
