"""The served model: its scorer, the encoding of requests, its reasons and its request schemas.

A model ``churn train`` registers is an MLflow pyfunc whose model directory holds
``artifacts/booster.txt`` (a LightGBM model file) and ``artifacts/metadata.json`` (the
:class:`~features.encoder.FeatureEncoder`, the calibration, the feature catalogue, the horizon,
metrics ...). Serving does not go through ``mlflow.pyfunc.load_model``: :func:`load_from_dir` reads
those two files into a :class:`LoadedModel`, whose probabilities come from the same
:class:`~features.scorer.ModelScorer` as the pyfunc's and ``churn evaluate``'s, so scoring one
account is a LightGBM call on one encoded row. :mod:`serving.loader` finds the directory.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from features.definitions import catalogue_by_name
from features.encoder import FeatureEncoder
from features.health import HealthReference
from features.mlflow_defaults import DEFAULT_MODEL_NAME
from features.redaction import redact
from features.scorer import PREDICT_THREADS, ModelScorer
from serving.explain import Explainer
from serving.schemas import score_columns_model, score_request_model
from serving.treeshap import Engine, TreeShap, fast_treeshap

log = logging.getLogger(__name__)

BOOSTER_FILE = "booster.txt"
#: What :func:`check_parses` runs in a child process, and how long it may take.
_PARSE_CHECK = "import sys, lightgbm; lightgbm.Booster(model_file=sys.argv[1])"
PARSE_TIMEOUT_SECONDS = 120
METADATA_FILE = "metadata.json"
TRAIN_HINT = ("Train and register a model with `churn train`, or point CHURN_MODEL_URI "
              "(--model-uri) at an existing model.")


#: The public reasons a model is not served: what ``/readyz`` and a 503 say (the full message,
#: with names, paths and URLs, goes to the log only).
NOT_FOUND = "the configured model is not in the model registry"
UNREACHABLE = "the model registry is unreachable"
TAMPERED = "the model's files do not match the digests recorded when it was registered"
UNREADABLE = "the model's files could not be read"
UNUSABLE = "the model failed its checks"


class ModelLoadError(RuntimeError):
    """The model could not be found or read. The message says what to do about it; any URL in it
    (MLflow's own error text quotes them) has its secrets masked.

    ``public`` is the short reason a client may see (one of the constants above); ``transient``
    says whether trying again later may succeed (the registry was unreachable)."""

    def __init__(self, message: str, *, public: str = UNUSABLE, transient: bool = False) -> None:
        super().__init__(redact(message))
        self.public = public
        self.transient = transient


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score: its scorer (booster, encoder, calibration) plus what serving needs
    around it: the codes of the request encoding, the reasons' explainer and TreeSHAP tables, the
    request schemas for the features it declares."""

    name: str
    version: str | None
    alias: str | None
    scorer: ModelScorer
    catalogue: list[dict[str, Any]]
    metadata: dict[str, Any]
    uri: str = ""
    source: str = ""
    #: Per-leaf TreeSHAP tables (:mod:`serving.treeshap`); None = LightGBM's ``pred_contrib``.
    treeshap: TreeShap | None = field(default=None, repr=False)
    feature_index: dict[str, int] = field(init=False, repr=False)
    explainer: Explainer = field(init=False, repr=False)
    category_codes: dict[str, dict[str, float]] = field(init=False, repr=False)
    #: Numeric catalogue features of families the training data did not have: no data for them.
    not_applicable: frozenset[str] = field(init=False, repr=False)
    #: Where the health inputs stood in the training data (None: fixed thresholds).
    health_reference: HealthReference | None = field(init=False, repr=False)
    #: Features outside the built-in catalogue, declared by the catalogue stored with the model
    #: (a data set's mapping adds some, e.g. ``key_*`` counts): ``(name, dtype, unit, description,
    #: low, high)``.
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
        gone = self.families_not_applicable
        object.__setattr__(self, "not_applicable", frozenset(
            n for n, spec in known.items() if spec.family in gone))
        object.__setattr__(self, "health_reference",
                           HealthReference.from_dict(self.metadata.get("health_reference")))
        recorded = {r.get("name"): r for r in self.catalogue}
        object.__setattr__(self, "extra_features", tuple(
            (n, "category" if n in self.encoder.categories_ else "float",
             str(recorded.get(n, {}).get("unit") or ""),
             str(recorded.get(n, {}).get("description") or n),
             _bound(recorded.get(n, {}).get("low")), _bound(recorded.get(n, {}).get("high")))
            for n in self.encoder.feature_names if n not in known))

    @classmethod
    def build(cls, booster: lgb.Booster, encoder: FeatureEncoder, metadata: dict[str, Any],
              **fields: Any) -> LoadedModel:
        """A model of a booster, its encoder and the metadata training stored with them (the
        calibration among it); ``fields``: the other fields (name, version, catalogue ...)."""
        scorer = ModelScorer(booster, encoder, metadata.get("calibration"))
        fields.setdefault("name", str(metadata.get("model_name") or DEFAULT_MODEL_NAME))
        fields.setdefault("catalogue", [dict(r) for r in metadata.get("catalogue") or []
                                        if isinstance(r, dict)])
        fields.setdefault("version", None)
        fields.setdefault("alias", None)
        return cls(scorer=scorer, metadata=metadata, **fields)

    @property
    def booster(self) -> lgb.Booster:
        return self.scorer.booster

    @property
    def encoder(self) -> FeatureEncoder:
        return self.scorer.encoder

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
    def families_not_applicable(self) -> frozenset[str]:
        """Feature families the model's training data did not have (no table for them)."""
        families = self.metadata.get("families") or {}
        return frozenset(f for f, present in families.items() if not present)

    @property
    def calibrated(self) -> bool:
        """The probabilities go through the calibration fitted in training."""
        return self.scorer.calibrated

    def raw_score(self, matrix: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds) of encoded rows (single-threaded)."""
        return self.scorer.raw_score(matrix)

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
        """Calibrated churn probabilities of raw scores (:meth:`ModelScorer.probability`)."""
        return self.scorer.probability(raw)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Churn probabilities for rows encoded by ``self.encoder`` (single-threaded)."""
        return self.probability(self.raw_score(matrix))

    def request_models(self, max_batch_size: int) -> tuple[type, type]:
        """The request schemas of ``POST /v1/scores`` and ``/v1/scores/columns`` for this model:
        the catalogue's features plus those the model declares beyond it."""
        return (score_request_model(max_batch_size, self.extra_features),
                score_columns_model(max_batch_size, self.extra_features))


def _bound(value: Any) -> float | None:
    """A recorded bound (None, or a number) as the request schema takes it."""
    return None if value is None else float(value)


def _artifacts_dir(model_dir: Path, model_uri: str) -> Path:
    for candidate in (model_dir / "artifacts", model_dir):
        if (candidate / METADATA_FILE).is_file() and (candidate / BOOSTER_FILE).is_file():
            return candidate
    raise ModelLoadError(
        f"{model_uri!r} (at {model_dir}) is not a churn-risk model: expected "
        f"artifacts/{BOOSTER_FILE} and artifacts/{METADATA_FILE} in the model directory.",
        public=UNREADABLE)


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not read {path}: {exc}", public=UNREADABLE) from exc
    if not isinstance(metadata, dict) or not isinstance(metadata.get("encoder"), dict):
        raise ModelLoadError(f"{path} has no 'encoder' object; was the model made by "
                             "`churn train`?")
    return metadata


def check_parses(path: Path) -> None:
    """Parse the LightGBM model file ``path`` in a child process first.

    On some malformed files (a cut-off tree, a missing field) LightGBM's parser raises a fatal
    C++ error that ends the whole process (``terminate``), which no ``except`` can catch: in the
    server that would be every worker reading the file. A child that parsed it proves the
    in-process parse of the same bytes safe.
    """
    try:
        done = subprocess.run([sys.executable, "-c", _PARSE_CHECK, str(path)],
                              capture_output=True, text=True, timeout=PARSE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(f"Parsing the LightGBM model {path} took over "
                             f"{PARSE_TIMEOUT_SECONDS} s", public=UNREADABLE) from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        detail = next((line for line in lines if "[Fatal]" in line), lines[-1] if lines else "")
        how = (f"was killed by signal {-done.returncode}" if done.returncode < 0
               else f"exited with {done.returncode}")
        raise ModelLoadError(f"LightGBM cannot parse the model {path} (the parser {how}): "
                             f"{detail}", public=UNREADABLE)


def _read_booster(path: Path) -> lgb.Booster:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not read the LightGBM model {path}: {exc}",
                             public=UNREADABLE) from exc
    check_parses(path)
    try:
        booster = lgb.Booster(model_str=text)
    except (ValueError, lgb.basic.LightGBMError) as exc:
        raise ModelLoadError(f"Could not read the LightGBM model {path}: {exc}",
                             public=UNREADABLE) from exc
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
        raise ModelLoadError(f"Model directory {model_dir} does not exist. {TRAIN_HINT}",
                             public=NOT_FOUND)
    artifacts = _artifacts_dir(model_dir, where)
    metadata = _read_metadata(artifacts / METADATA_FILE)
    try:
        encoder = FeatureEncoder.from_dict(metadata["encoder"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"{artifacts / METADATA_FILE}: malformed encoder ({exc!r}).") from exc
    booster = _read_booster(artifacts / BOOSTER_FILE)
    catalogue = [dict(r) for r in metadata.get("catalogue") or [] if isinstance(r, dict)]
    _check_features(encoder, booster, where, catalogue)
    model = LoadedModel.build(
        booster, encoder, metadata, version=version, alias=alias, catalogue=catalogue,
        uri=model_uri or str(model_dir), source=str(artifacts.parent),
        treeshap=_treeshap_tables(booster, where) if treeshap == "tables" else None,
        **({"name": name} if name else {}))
    if model.extra_features:  # its request schema must build (names must be valid field names)
        try:
            model.request_models(1)
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


