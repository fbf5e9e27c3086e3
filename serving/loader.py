"""Finding the served model in MLflow: the only module in ``serving`` that talks to MLflow.

Accepted model URIs:

* ``models:/<name>@<alias>`` (default ``models:/churn-risk@champion``), ``models:/<name>/<version>``,
  ``models:/<name>/latest`` and ``models:/m-<logged model id>``;
* ``runs:/<run_id>/<path>`` and any other artifact URI MLflow can download;
* a local model directory (the one holding ``MLmodel``), or its ``artifacts`` directory.

Registry look-ups use an ``MlflowClient`` bound to the given tracking URI; the global MLflow
tracking/registry URIs are never changed. :func:`load_model` resolves and downloads the model,
then :func:`serving.model.load_from_dir` reads it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from features.digests import file_sha256, recorded_digests
from features.redaction import redact
from serving.model import (
    NOT_FOUND,
    TAMPERED,
    TRAIN_HINT,
    UNREACHABLE,
    LoadedModel,
    ModelLoadError,
    load_from_dir,
)
from serving.treeshap import Engine

log = logging.getLogger(__name__)


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
            "if the store is elsewhere.", public=NOT_FOUND)


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _resolve_registered(model_uri: str, tracking_uri: str
                        ) -> tuple[str | None, str | None, str | None, str, dict[str, str]]:
    """``models:/...`` -> (registered name, version, alias, artifact location of the model,
    the digests of its files recorded at registration)."""
    from mlflow.exceptions import MlflowException

    ref = model_uri[len("models:/"):].strip("/")
    where = f"in {redact(tracking_uri)}"
    client = _client(tracking_uri)
    try:
        if ref.startswith("m-") and "/" not in ref and "@" not in ref:
            logged = client.get_logged_model(ref)
            return None, None, None, logged.artifact_location, {}
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
                                     f"{TRAIN_HINT}", public=NOT_FOUND) from exc
            raise
        if alias is not None:
            try:
                version = str(client.get_model_version_by_alias(name, alias).version)
            except MlflowException as exc:
                if _not_found(exc):
                    raise ModelLoadError(
                        f"Registered model '{name}' has no alias '{alias}' {where}. "
                        f"{TRAIN_HINT}", public=NOT_FOUND) from exc
                raise
        elif version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ModelLoadError(f"Registered model '{name}' has no versions {where}. "
                                     f"{TRAIN_HINT}", public=NOT_FOUND)
            version = str(max(int(v.version) for v in versions))
        elif not version.isdigit():
            raise ModelLoadError(
                f"Unsupported model URI {model_uri!r}: use models:/{name}@<alias>, "
                f"models:/{name}/<version> or models:/{name}/latest (stages are not supported).",
                public=NOT_FOUND)
        try:
            location = client.get_model_version_download_uri(name, version)
        except MlflowException as exc:
            if _not_found(exc):
                raise ModelLoadError(f"Registered model '{name}' has no version {version} "
                                     f"{where}. {TRAIN_HINT}", public=NOT_FOUND) from exc
            raise
        tags = dict(client.get_model_version(name, version).tags or {})
        return name, version, alias, location, recorded_digests(tags)
    except MlflowException as exc:
        raise ModelLoadError(f"Could not resolve {model_uri!r} {where}: {exc.message}",
                             public=UNREACHABLE, transient=True) from exc


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
                                 f"{TRAIN_HINT}", public=NOT_FOUND) from exc
        raise ModelLoadError(f"Could not resolve {model_uri!r} in {redact(tracking_uri)}: "
                             f"{exc.message}", public=UNREACHABLE, transient=True) from exc
    return run.info.artifact_uri.rstrip("/") + f"/{path}"  # a model logged as run artifacts


def _download(artifact_uri: str, tracking_uri: str) -> Path:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except MlflowException as exc:
        raise ModelLoadError(f"Could not download model artifacts from {redact(artifact_uri)}: "
                             f"{exc.message}", public=UNREACHABLE, transient=True) from exc
    except OSError as exc:
        raise ModelLoadError(f"Could not download model artifacts from {redact(artifact_uri)}: "
                             f"{exc}", public=UNREACHABLE, transient=True) from exc
    return Path(local)


def verify_digests(model_dir: Path, digests: dict[str, str], where: str) -> None:
    """Check the downloaded files against the digests recorded when the version was registered
    (:mod:`features.digests`), before anything parses them.

    Raises:
        ModelLoadError: a file is missing or differs (cut short, edited, swapped).
    """
    if not digests:
        log.warning("%s was registered without file digests: its files are not verified "
                    "(register it again with `churn train` to have them checked)", where,
                    extra={"event": "model_unverified"})
        return
    artifacts = model_dir / "artifacts" if (model_dir / "artifacts").is_dir() else model_dir
    for name, expected in sorted(digests.items()):
        path = artifacts / name
        actual = file_sha256(path) if path.is_file() else "missing"
        if actual != expected.lower():
            raise ModelLoadError(
                f"{where}: {name} does not match the SHA-256 recorded when the version was "
                f"registered (recorded {expected}, found {actual}); the file was changed or "
                "cut short in the artifact store. Register the model again.", public=TAMPERED)


def _local_path(model_uri: str) -> Path | None:
    if model_uri.startswith("file:"):
        return Path(unquote(urlparse(model_uri).path))
    if "://" in model_uri or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/", model_uri):
        return None
    return Path(model_uri).expanduser()


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
        name, version, alias, location, digests = _resolve_registered(model_uri, tracking_uri)
        local_dir = _download(location, tracking_uri)
        verify_digests(local_dir, digests, f"{name} version {version}" if name else model_uri)
        model = load_from_dir(local_dir, model_uri=model_uri, name=name, version=version,
                              alias=alias, treeshap=treeshap)
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
                             f"{exc.message}", public=UNREACHABLE, transient=True) from exc
    except Exception as exc:  # noqa: BLE001 -- connection errors come in many types
        raise ModelLoadError(f"Registry {redact(tracking_uri)} unreachable: "
                             f"{type(exc).__name__}: {exc}", public=UNREACHABLE,
                             transient=True) from exc
