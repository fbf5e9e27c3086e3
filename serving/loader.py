"""Loading the served model from MLflow: the only module in ``serving`` that talks to MLflow.

The model ``churn train`` registers is an MLflow pyfunc whose model directory holds
``artifacts/booster.txt`` (a LightGBM model file) and ``artifacts/metadata.json`` (the
:class:`~features.modelframe.FeatureEncoder`, the feature catalogue, the horizon, metrics ...).
Serving does not go through ``mlflow.pyfunc.load_model``: it reads those two files and keeps the
booster, so that scoring one account is a LightGBM call on one encoded row.

Accepted model URIs:

* ``models:/<name>@<alias>`` (default ``models:/churn-risk@champion``), ``models:/<name>/<version>``,
  ``models:/<name>/latest`` and ``models:/m-<logged model id>``;
* ``runs:/<run_id>/<path>`` and any other artifact URI MLflow can download;
* a local model directory (the one holding ``MLmodel``), or its ``artifacts`` directory.

Registry look-ups use an ``MlflowClient`` bound to the given tracking URI; the global MLflow
tracking/registry URIs are never changed.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import lightgbm as lgb
import numpy as np

from features.definitions import catalogue_by_name
from features.modelframe import FeatureEncoder
from serving.explain import Explainer
from serving.schemas import score_request_model
from serving.treeshap import Engine, TreeShap, fast_treeshap

log = logging.getLogger(__name__)

BOOSTER_FILE = "booster.txt"
METADATA_FILE = "metadata.json"
#: LightGBM threads per prediction. Scoring requests are small and uvicorn may run one worker per
#: core; OpenMP's default (one thread per core in every worker) oversubscribes the CPU.
PREDICT_THREADS = 1

TRAIN_HINT = ("Train and register a model with `churn train`, or point CHURN_MODEL_URI "
              "(--model-uri) at an existing model.")


class ModelLoadError(RuntimeError):
    """The model could not be found or read. The message says what to do about it."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score: the booster plus everything needed to encode its input."""

    name: str
    version: str | None
    alias: str | None
    booster: lgb.Booster
    encoder: FeatureEncoder
    catalogue: list[dict[str, Any]]
    metadata: dict[str, Any]
    uri: str = ""
    source: str = ""
    #: Per-leaf TreeSHAP tables (:mod:`serving.treeshap`); None = LightGBM's ``pred_contrib``.
    treeshap: TreeShap | None = field(default=None, repr=False)
    feature_index: dict[str, int] = field(init=False, repr=False)
    explainer: Explainer = field(init=False, repr=False)
    category_codes: dict[str, dict[str, float]] = field(init=False, repr=False)
    #: Features outside the built-in catalogue, declared by the catalogue stored with the model
    #: (a data set's mapping adds some, e.g. ``key_*`` counts): ``(name, dtype, unit, description)``.
    extra_features: tuple[tuple[str, str, str, str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_index",
                           {n: j for j, n in enumerate(self.encoder.feature_names)})
        object.__setattr__(self, "category_codes", {
            name: {c: float(i) for i, c in enumerate(cats)}
            for name, cats in self.encoder.categories_.items()})
        object.__setattr__(self, "explainer",
                           Explainer.for_features(self.encoder.feature_names, self.catalogue))
        known = catalogue_by_name()
        recorded = {r.get("name"): r for r in self.catalogue}
        object.__setattr__(self, "extra_features", tuple(
            (n, "category" if n in self.encoder.categories_ else "float",
             str(recorded.get(n, {}).get("unit") or ""),
             str(recorded.get(n, {}).get("description") or n))
            for n in self.encoder.feature_names if n not in known))

    @property
    def horizon_days(self) -> int | None:
        return self.metadata.get("horizon_days")

    @property
    def trained_at(self) -> str | None:
        return self.metadata.get("trained_at")

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.metadata.get("metrics") or {})

    def encode(self, records: list[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """``(matrix, missing)``: the rows :meth:`FeatureEncoder.transform_records` makes (same
        codes, unknown categories NaN) and which features each record did not send (None) or sent
        with a category value the model has not seen: both are scored as missing.

        Column by column for batches (one ``np.array`` per numeric feature, None -> NaN), row by
        row for a few records; category code tables are built once per model.
        """
        names = self.encoder.feature_names
        codes = self.category_codes
        n = len(records)
        if n <= 8:
            out = np.full((n, len(names)), np.nan, dtype=np.float64)
            missing = np.zeros((n, len(names)), dtype=bool)
            for i, record in enumerate(records):
                row, miss = out[i], missing[i]
                for j, name in enumerate(names):
                    value = record.get(name)
                    if value is None:
                        miss[j] = True
                        continue
                    lookup = codes.get(name)
                    if lookup is None:
                        row[j] = float(value)
                    else:
                        row[j] = lookup.get(value if isinstance(value, str) else str(value),
                                            math.nan)
                        miss[j] = row[j] != row[j]  # a category the model has not seen
            return out, missing
        # rows of values via C-level itemgetter (records from the API carry every feature) or
        # map/zip, then one column per feature
        rows: list[Any] = []
        if len(names) > 1:
            getter = operator.itemgetter(*names)
            try:
                rows = [getter(r) for r in records]
            except KeyError:
                rows = []
        if len(rows) != n:
            rows = [tuple(map(r.get, names)) for r in records]
        return self.encode_columns(dict(zip(names, zip(*rows, strict=True), strict=True)), n)

    def encode_columns(self, columns: Mapping[str, Sequence[Any]], n: int
                       ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode` for ``n`` accounts sent column by column: ``{feature: n values}`` (None
        = missing; a feature absent from ``columns`` is missing for every account)."""
        names = self.encoder.feature_names
        codes = self.category_codes
        out = np.full((n, len(names)), np.nan, dtype=np.float64)
        for j, name in enumerate(names):
            values = columns.get(name)
            if values is None:
                continue
            lookup = codes.get(name)
            if lookup is None:
                out[:, j] = np.array(values, dtype=np.float64)  # None -> NaN
            else:
                out[:, j] = [math.nan if v is None else
                             lookup.get(v if isinstance(v, str) else str(v), math.nan)
                             for v in values]
        # not sent, sent as null, or a category the model has not seen
        return out, np.isnan(out)

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The probability calibration fitted in training (``metadata.json``), if any."""
        cal = self.metadata.get("calibration")
        return cal if isinstance(cal, dict) and cal.get("method", "none") != "none" else None

    @property
    def sigmoid(self) -> float:
        """LightGBM's ``sigmoid`` parameter of a binary objective (probability = 1/(1+e^-s*raw))."""
        return _sigmoid_parameter(self.booster)

    def raw_score(self, matrix: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds) of encoded rows (single-threaded)."""
        return np.asarray(self.booster.predict(matrix, raw_score=True,
                                               num_threads=PREDICT_THREADS), dtype=np.float64)

    @property
    def treeshap_engine(self) -> Engine:
        """Which code computes the contributions: ``tables`` or ``lightgbm``."""
        return "lightgbm" if self.treeshap is None else "tables"

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions: one column per feature plus the expected value (last column);
        each row sums to the raw score. The same numbers from either engine (see
        :mod:`serving.treeshap`)."""
        if self.treeshap is not None:
            return self.treeshap.contributions(matrix)
        return np.asarray(self.booster.predict(matrix, pred_contrib=True,
                                               num_threads=PREDICT_THREADS), dtype=np.float64)

    def probability(self, raw: np.ndarray) -> np.ndarray:
        """Churn probabilities from raw scores, calibrated when the model carries a calibration."""
        p = 1.0 / (1.0 + np.exp(-self.sigmoid * np.asarray(raw, dtype=np.float64)))
        cal = self.calibration
        if cal is not None:
            from features.calibration import calibrate

            p = calibrate(p, cal)
        return p

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Churn probabilities for rows encoded by ``self.encoder`` (single-threaded)."""
        return self.probability(self.raw_score(matrix))


def _sigmoid_parameter(booster: lgb.Booster) -> float:
    cached = getattr(booster, "_churn_sigmoid", None)
    if cached is None:
        objective = booster.dump_model(num_iteration=1).get("objective", "")
        match = re.search(r"sigmoid:([0-9.eE+-]+)", objective)
        cached = float(match.group(1)) if match else 1.0
        booster._churn_sigmoid = cached  # type: ignore[attr-defined]
    return cached


def redact(uri: str) -> str:
    """``uri`` without a password (``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db``)."""
    return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", uri)


def _check_tracking_store(tracking_uri: str) -> None:
    """Fail clearly on a missing SQLite store (MLflow would silently create an empty one)."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = tracking_uri[len("sqlite:///"):].split("?", 1)[0]
    if path in ("", ":memory:"):
        return
    if not Path(path).exists():
        raise ModelLoadError(
            f"MLflow tracking store {tracking_uri} does not exist (looked for "
            f"{Path(path).resolve()}). {TRAIN_HINT} Set CHURN_TRACKING_URI or MLFLOW_TRACKING_URI "
            "if the store is elsewhere.")


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _resolve_registered(model_uri: str, tracking_uri: str
                        ) -> tuple[str | None, str | None, str | None, str]:
    """``models:/...`` -> (registered name, version, alias, artifact location of the model)."""
    from mlflow.exceptions import MlflowException

    ref = model_uri[len("models:/"):].strip("/")
    where = f"in {redact(tracking_uri)}"
    client = _client(tracking_uri)
    try:
        if ref.startswith("m-") and "/" not in ref and "@" not in ref:
            logged = client.get_logged_model(ref)
            return None, None, None, logged.artifact_location
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = None
        elif "/" in ref:
            name, version = ref.split("/", 1)
            alias = None
        else:
            raise ModelLoadError(
                f"Model URI {model_uri!r} names no version or alias; use "
                f"models:/{ref}@champion or models:/{ref}/<version>.")
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if _not_found(exc):
                raise ModelLoadError(f"No registered model named '{name}' {where}. "
                                     f"{TRAIN_HINT}") from exc
            raise
        if alias is not None:
            try:
                version = str(client.get_model_version_by_alias(name, alias).version)
            except MlflowException as exc:
                if _not_found(exc):
                    raise ModelLoadError(
                        f"Registered model '{name}' has no alias '{alias}' {where}. "
                        f"{TRAIN_HINT}") from exc
                raise
        elif version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ModelLoadError(f"Registered model '{name}' has no versions {where}. "
                                     f"{TRAIN_HINT}")
            version = str(max(int(v.version) for v in versions))
        elif not version.isdigit():
            raise ModelLoadError(
                f"Unsupported model URI {model_uri!r}: use models:/{name}@<alias>, "
                f"models:/{name}/<version> or models:/{name}/latest (stages are not supported).")
        try:
            location = client.get_model_version_download_uri(name, version)
        except MlflowException as exc:
            if _not_found(exc):
                raise ModelLoadError(f"Registered model '{name}' has no version {version} "
                                     f"{where}. {TRAIN_HINT}") from exc
            raise
        return name, version, alias, location
    except MlflowException as exc:
        raise ModelLoadError(f"Could not resolve {model_uri!r} {where}: {exc.message}") from exc


def _resolve_run(model_uri: str, tracking_uri: str) -> str:
    """``runs:/<run_id>/<path>`` -> artifact location, resolved with our client.

    MLflow's own resolution of a model logged in a run (an MLflow 3 "logged model") looks the
    model up in the *global* registry URI, so it is done here instead.
    """
    from mlflow.exceptions import MlflowException

    run_id, _, path = model_uri[len("runs:/"):].strip("/").partition("/")
    if not run_id or not path:
        raise ModelLoadError(f"Unsupported model URI {model_uri!r}: use runs:/<run_id>/<path>.")
    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
        name, _, rest = path.partition("/")
        token = None
        while True:
            page = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                               filter_string=f"name = '{name}'",
                                               page_token=token)
            match = next((m for m in page if m.source_run_id == run_id), None)
            if match is not None:
                return match.artifact_location.rstrip("/") + (f"/{rest}" if rest else "")
            token = page.token
            if not token:
                break
    except MlflowException as exc:
        if _not_found(exc):
            raise ModelLoadError(f"No run {run_id} in {redact(tracking_uri)}. "
                                 f"{TRAIN_HINT}") from exc
        raise ModelLoadError(f"Could not resolve {model_uri!r} in {redact(tracking_uri)}: "
                             f"{exc.message}") from exc
    return run.info.artifact_uri.rstrip("/") + f"/{path}"  # a model logged as run artifacts


def _download(artifact_uri: str, tracking_uri: str) -> Path:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except MlflowException as exc:
        raise ModelLoadError(f"Could not download model artifacts from {redact(artifact_uri)}: "
                             f"{exc.message}") from exc
    except OSError as exc:
        raise ModelLoadError(f"Could not download model artifacts from {redact(artifact_uri)}: "
                             f"{exc}") from exc
    return Path(local)


def _local_path(model_uri: str) -> Path | None:
    if model_uri.startswith("file:"):
        return Path(unquote(urlparse(model_uri).path))
    if "://" in model_uri or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/", model_uri):
        return None
    return Path(model_uri).expanduser()


def _artifacts_dir(model_dir: Path, model_uri: str) -> Path:
    for candidate in (model_dir / "artifacts", model_dir):
        if (candidate / METADATA_FILE).is_file() and (candidate / BOOSTER_FILE).is_file():
            return candidate
    raise ModelLoadError(
        f"{model_uri!r} (at {model_dir}) is not a churn-risk model: expected "
        f"artifacts/{BOOSTER_FILE} and artifacts/{METADATA_FILE} in the model directory.")


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not read {path}: {exc}") from exc
    if not isinstance(metadata, dict) or not isinstance(metadata.get("encoder"), dict):
        raise ModelLoadError(f"{path} has no 'encoder' object; was the model made by "
                             "`churn train`?")
    return metadata


def _read_booster(path: Path) -> lgb.Booster:
    try:
        text = path.read_text(encoding="utf-8")
        booster = lgb.Booster(model_str=text)
    except (OSError, ValueError, lgb.basic.LightGBMError) as exc:
        raise ModelLoadError(f"Could not read the LightGBM model {path}: {exc}") from exc
    objective = next((line.split("=", 1)[1] for line in text.splitlines()[:20]
                      if line.startswith("objective=")), "")
    if objective.split(" ")[0] not in ("binary", "cross_entropy", "xentropy"):
        raise ModelLoadError(f"{path} is not a binary classifier (objective {objective!r}); "
                             "serving expects churn probabilities.")
    return booster


def _check_features(encoder: FeatureEncoder, booster: lgb.Booster, where: str,
                    recorded: Sequence[Mapping[str, Any]] = ()) -> None:
    names = encoder.feature_names
    if booster.num_feature() != len(names):
        raise ModelLoadError(f"{where}: the booster takes {booster.num_feature()} features but "
                             f"the encoder produces {len(names)}.")
    booster_names = booster.feature_name()
    if (not all(n.startswith("Column_") for n in booster_names)
            and list(booster_names) != list(names)):
        raise ModelLoadError(f"{where}: the booster's feature names differ from the encoder's.")
    # A feature must be declared: by this build's catalogue, or by the catalogue stored with the
    # model (features a data set's mapping adds); the declared type must match the encoding.
    dtypes = {r.get("name"): r.get("dtype") for r in recorded}
    dtypes.update({n: spec.dtype for n, spec in catalogue_by_name().items()})
    unknown = [n for n in names if n not in dtypes]
    if unknown:
        raise ModelLoadError(
            f"{where}: the model uses features this serving build does not know and its stored "
            f"catalogue does not declare: {unknown}. Deploy serving from the same release as the "
            "training code.")
    categorical = set(encoder.categorical)
    mismatched = [n for n in names if (dtypes[n] == "category") != (n in categorical)]
    if mismatched:
        raise ModelLoadError(f"{where}: features encoded with a different type than the "
                             f"catalogue declares: {mismatched}.")


def _treeshap_tables(booster: lgb.Booster, where: str) -> TreeShap | None:
    """The model's TreeSHAP tables, or None (with a warning) to explain with LightGBM's own."""
    try:
        return fast_treeshap(booster)
    except Exception as exc:  # noqa: BLE001 -- only a speed-up: any failure keeps LightGBM's
        log.warning("%s: reasons use LightGBM's pred_contrib, not TreeSHAP tables: %s: %s",
                    where, type(exc).__name__, exc, extra={"event": "treeshap_fallback"})
        return None


def load_from_dir(model_dir: str | Path, *, model_uri: str = "", name: str | None = None,
                  version: str | None = None, alias: str | None = None,
                  treeshap: Engine = "tables") -> LoadedModel:
    """Read a local model directory (or its ``artifacts`` directory).

    ``treeshap``: ``tables`` explains with :mod:`serving.treeshap` when the model allows it
    (checked against LightGBM's ``pred_contrib`` here), ``lightgbm`` always with LightGBM's.
    """
    model_dir = Path(model_dir)
    where = model_uri or str(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"Model directory {model_dir} does not exist. {TRAIN_HINT}")
    artifacts = _artifacts_dir(model_dir, where)
    metadata = _read_metadata(artifacts / METADATA_FILE)
    try:
        encoder = FeatureEncoder.from_dict(metadata["encoder"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"{artifacts / METADATA_FILE}: malformed encoder ({exc!r}).") from exc
    booster = _read_booster(artifacts / BOOSTER_FILE)
    catalogue = [dict(r) for r in metadata.get("catalogue") or [] if isinstance(r, dict)]
    _check_features(encoder, booster, where, catalogue)
    model = LoadedModel(
        name=str(name or metadata.get("model_name") or "churn-risk"),
        version=version, alias=alias, booster=booster, encoder=encoder, catalogue=catalogue,
        metadata=metadata, uri=model_uri or str(model_dir), source=str(artifacts.parent),
        treeshap=_treeshap_tables(booster, where) if treeshap == "tables" else None)
    if model.extra_features:  # its request schema must build (names must be valid field names)
        try:
            score_request_model(1, model.extra_features)
        except Exception as exc:  # pydantic's error names the field
            raise ModelLoadError(f"{where}: cannot accept the features the model declares: "
                                 f"{exc}") from exc
    smoke_check(model, where)
    return model


def smoke_check(model: LoadedModel, where: str = "") -> None:
    """Score a row with no data and a row of zeros/first categories; refuse a model whose
    probabilities are not finite numbers in [0, 1] or whose contributions do not add up."""
    where = where or model.uri
    enc = model.encoder
    full = {n: (enc.categories_[n][0] if enc.categories_.get(n) else
                (None if n in enc.categories_ else 0.0)) for n in enc.feature_names}
    try:
        matrix = enc.transform_records([{}, full])
        raw = model.raw_score(matrix)
        contributions = model.contributions(matrix)
        p = model.probability(raw)
    except Exception as exc:  # noqa: BLE001 -- any failure here means: do not serve this model
        raise ModelLoadError(f"{where}: smoke prediction failed: {type(exc).__name__}: "
                             f"{exc}") from exc
    if not (np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))):
        raise ModelLoadError(f"{where}: smoke prediction gave {p.tolist()}, not probabilities.")
    if not np.allclose(contributions.sum(axis=1), raw, atol=1e-6):
        raise ModelLoadError(f"{where}: feature contributions do not add up to the raw score.")


def load_model(model_uri: str, tracking_uri: str, treeshap: Engine = "tables") -> LoadedModel:
    """Load the model ``model_uri`` names, resolving registry URIs against ``tracking_uri``
    (``treeshap``: see :func:`load_from_dir`).

    Raises:
        ModelLoadError: with a message that says what is missing and what to do.
    """
    local = _local_path(model_uri)
    if local is not None:
        model = load_from_dir(local, model_uri=model_uri, treeshap=treeshap)
    elif model_uri.startswith("models:/"):
        _check_tracking_store(tracking_uri)
        name, version, alias, location = _resolve_registered(model_uri, tracking_uri)
        model = load_from_dir(_download(location, tracking_uri), model_uri=model_uri, name=name,
                              version=version, alias=alias, treeshap=treeshap)
    elif model_uri.startswith("runs:/"):
        _check_tracking_store(tracking_uri)
        location = _resolve_run(model_uri, tracking_uri)
        model = load_from_dir(_download(location, tracking_uri), model_uri=model_uri,
                              treeshap=treeshap)
    else:
        model = load_from_dir(_download(model_uri, tracking_uri), model_uri=model_uri,
                              treeshap=treeshap)
    log.info("loaded model %s version %s (alias %s) from %s; TreeSHAP: %s", model.name,
             model.version, model.alias, redact(model_uri), model.treeshap_engine)
    return model


def alias_target(model_uri: str) -> tuple[str, str] | None:
    """``models:/<name>@<alias>`` -> (name, alias); None for URIs that cannot move."""
    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri[len("models:/"):].strip("/")
    if "@" not in ref:
        return None if not ref.endswith("/latest") else (ref.rsplit("/", 1)[0], "latest")
    name, alias = ref.split("@", 1)
    return name, alias


def current_version(model_uri: str, tracking_uri: str) -> str | None:
    """The version ``model_uri``'s alias (or ``latest``) points at now; None if it cannot move.

    Raises:
        ModelLoadError: the registry could not answer (unreachable, alias removed ...).
    """
    target = alias_target(model_uri)
    if target is None:
        return None
    name, alias = target
    from mlflow.exceptions import MlflowException

    try:
        client = _client(tracking_uri)
        if alias == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            return str(max(int(v.version) for v in versions)) if versions else None
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        raise ModelLoadError(f"Could not resolve {model_uri!r} in {redact(tracking_uri)}: "
                             f"{exc.message}") from exc
    except Exception as exc:  # noqa: BLE001 -- connection errors come in many types
        raise ModelLoadError(f"Registry {redact(tracking_uri)} unreachable: "
                             f"{type(exc).__name__}: {exc}") from exc
