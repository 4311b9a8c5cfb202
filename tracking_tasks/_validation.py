"""Checks that a param, metric, tag, model or workspace name would be accepted by MLflow, done before sending."""

from __future__ import annotations

import logging
import math
import numbers
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from tracking_tasks.errors import InvalidArgumentError, InvalidLogDataError, TrackingConfigError

log = logging.getLogger(__name__)

# MLflow's own limits (mlflow/utils/validation.py), restated so a batch is checked whole
# before its first request: MLflow itself would refuse it part way through.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250
#: The runs table's name column (``String(250)``): PostgreSQL and MySQL refuse a longer
#: name, SQLite stores it, so the library refuses it everywhere.
MAX_RUN_NAME_LENGTH = 250
_VALID_KEY = re.compile(r"^[/\w.\- :]*$")
#: Characters MLflow refuses in a logged model's name (``_validate_logged_model_name``).
MODEL_NAME_FORBIDDEN = ("/", ":", ".", "%", '"', "'")
MAX_MODEL_NAME_LENGTH = 500


def check_model_name(name: Any) -> str:
    """Return ``name`` stripped if MLflow accepts it as a logged model's name, else raise."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidLogDataError(f"a model needs a name (a non-empty string), not {name!r}")
    text = name.strip()
    bad = sorted({c for c in text if c in MODEL_NAME_FORBIDDEN})
    if bad or len(text) > MAX_MODEL_NAME_LENGTH:
        raise InvalidLogDataError(
            f"model name {text[:80]!r} cannot be used: MLflow refuses the characters "
            f"{' '.join(MODEL_NAME_FORBIDDEN)} and names over {MAX_MODEL_NAME_LENGTH} "
            "characters (e.g. write 'digits-sgd-v2', not 'digits.sgd/v2')"
        )
    return text


def check_key(key: Any, kind: str) -> str:
    """Return ``key`` if MLflow accepts it as a param, metric or tag name, else raise."""
    if not isinstance(key, str):
        raise InvalidLogDataError(
            f"{kind} key {key!r} is a {type(key).__name__}; MLflow keys must be strings: "
            f"use str({key!r})"
        )
    if not key:
        raise InvalidLogDataError(f"{kind} key is empty: give every {kind} a name")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidLogDataError(
            f"{kind} key {key[:40]!r}... is {len(key)} characters; MLflow allows {MAX_KEY_LENGTH}"
        )
    if not _VALID_KEY.match(key):
        raise InvalidLogDataError(
            f"{kind} key {key!r} has characters MLflow refuses: use letters, digits, "
            "'_', '-', '.', ' ', ':' and '/'"
        )
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith(("..", "/")):
        raise InvalidLogDataError(
            f"{kind} key {key!r} is not a normalised relative path (no '..', leading '/', "
            f"'//' or trailing '/'): write {norm.lstrip('/')!r}"
        )
    return key


def check_run_name(run_name: Any) -> str | None:
    """Return ``run_name`` if every MLflow backend stores it (None: MLflow picks one).

    Raises:
        InvalidArgumentError: not a string, or longer than 250 characters.
    """
    if run_name is None:
        return None
    if not isinstance(run_name, str):
        raise InvalidArgumentError(
            f"run_name {run_name!r} is a {type(run_name).__name__}; give a string"
        )
    if len(run_name) > MAX_RUN_NAME_LENGTH:
        raise InvalidArgumentError(
            f"run_name {run_name[:40]!r}... is {len(run_name)} characters; MLflow stores at "
            f"most {MAX_RUN_NAME_LENGTH} (PostgreSQL and MySQL refuse a longer one): shorten "
            "it, and keep what does not fit in a tag or param"
        )
    return run_name


def _as_mapping(values: Any, kind: str) -> Mapping[Any, Any]:
    if not isinstance(values, Mapping):
        raise InvalidLogDataError(
            f"{kind}s must be a mapping of name to value, not {type(values).__name__}"
        )
    return values


def check_params(params: Any) -> dict[str, str]:
    """Validate params and return them as MLflow will store them (strings).

    Raises:
        InvalidLogDataError: a key is invalid, a value is NaN, or a value is longer than
            MLflow's limit of 6,000 characters.
    """
    checked: dict[str, str] = {}
    for key, value in _as_mapping(params, "param").items():
        check_key(key, "param")
        if isinstance(value, float) and math.isnan(value):
            raise InvalidLogDataError(
                f"param {key!r} is NaN: a param records a setting, so log a real value "
                "(or log the quantity as a metric, which may be NaN)"
            )
        text = value if isinstance(value, str) else str(value)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            raise InvalidLogDataError(
                f"param {key!r} is {len(text)} characters; MLflow allows {MAX_PARAM_VAL_LENGTH}. "
                "Log long values as an artifact (a file) instead"
            )
        checked[key] = text
    return checked


def check_tags(tags: Any) -> dict[str, str]:
    """Validate tags and return them as strings.

    Raises:
        InvalidLogDataError: a key is not a valid string, or a value is longer than
            MLflow's limit of 8,000 characters.
    """
    checked: dict[str, str] = {}
    for key, value in _as_mapping(tags, "tag").items():
        check_key(key, "tag")
        text = value if isinstance(value, str) else str(value)
        if len(text) > MAX_TAG_VAL_LENGTH:
            raise InvalidLogDataError(
                f"tag {key!r} is {len(text)} characters; MLflow allows {MAX_TAG_VAL_LENGTH}"
            )
        checked[key] = text
    return checked


def check_metric(key: Any, value: Any, step: Any) -> tuple[str, float, int]:
    """Validate one metric point; return it as (key, float value, int step).

    Raises:
        InvalidLogDataError: the key is invalid, the value is not a real number, or the
            step is not an integer.
    """
    check_key(key, "metric")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidLogDataError(
            f"metric {key!r} value {value!r} is a {type(value).__name__}; metrics are "
            "numbers (convert with float(), or log text as a tag)"
        )
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise InvalidLogDataError(f"metric {key!r} step {step!r} must be an integer")
    return key, float(value), int(step)


def check_metrics(metrics: Any, step: Any) -> list[tuple[str, float, int]]:
    """Validate a mapping of metric name to value, all at one step."""
    return [check_metric(key, value, step) for key, value in _as_mapping(metrics, "metric").items()]


# MLflow's workspace-name rule (WorkspaceNameValidator), restated with re.fullmatch: its
# re.match with "$" lets a trailing newline through, and MLflow strips what it sends, so
# " team-a" would silently become "team-a". "default" is the server's own workspace.
_WORKSPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MIN_WORKSPACE_NAME_LENGTH = 2
MAX_WORKSPACE_NAME_LENGTH = 63
RESERVED_WORKSPACE_NAMES = frozenset({"workspaces", "api", "ajax-api", "static-files"})
DEFAULT_WORKSPACE = "default"


def check_workspace_name(name: Any, source: str = "workspace") -> str:
    """Return ``name`` if MLflow accepts it as a workspace name, else raise.

    Args:
        name: The workspace name.
        source: Where it came from, for the message (``$MLFLOW_WORKSPACE``...).

    Raises:
        TrackingConfigError: not a string, 2 to 63 characters of lower-case letters,
            digits and inner hyphens, or a reserved name.
    """
    if not isinstance(name, str):
        raise TrackingConfigError(
            f"{source} must be an MLflow workspace name (a string), not {type(name).__name__}"
        )
    if name == DEFAULT_WORKSPACE:
        return name
    if not MIN_WORKSPACE_NAME_LENGTH <= len(name) <= MAX_WORKSPACE_NAME_LENGTH:
        raise TrackingConfigError(
            f"{source} {name!r} is {len(name)} characters; an MLflow workspace name has "
            f"{MIN_WORKSPACE_NAME_LENGTH} to {MAX_WORKSPACE_NAME_LENGTH}"
        )
    if not _WORKSPACE_NAME.fullmatch(name):
        raise TrackingConfigError(
            f"{source} {name!r} is not an MLflow workspace name: use lower-case letters, "
            "digits and hyphens, starting and ending with a letter or digit (e.g. 'team-a')"
        )
    if name in RESERVED_WORKSPACE_NAMES:
        raise TrackingConfigError(
            f"{source} {name!r} is reserved by MLflow (as are "
            f"{', '.join(sorted(RESERVED_WORKSPACE_NAMES - {name}))}): choose another name"
        )
    return name


#: What MLflow's SQL store keeps for +inf and -inf (it cannot store infinities).
MLFLOW_INFINITY = 1.7976931348623157e308


def note_infinite(key: str, value: float, warned: set[str]) -> bool:
    """Say (once per key and ``warned`` set) that MLflow stores an infinite metric changed.

    MLflow accepts ``inf`` and ``-inf`` and its store keeps them as the largest float,
    ``±1.797e+308``, which is what the UI, a search and ``get_run`` show afterwards. The
    value is logged as MLflow logs it, and the change is said, never made silently.

    Args:
        key: The metric's name.
        value: Its value.
        warned: The keys already warned about (a logger's, or one call's).

    Returns:
        True when the warning was logged now.

    Example:
        >>> note_infinite("loss", float("inf"), set()), note_infinite("loss", 0.5, set())
        (True, False)
    """
    if not math.isinf(value) or key in warned:
        return False
    warned.add(key)
    log.warning(
        "metric %r is %s: MLflow's store keeps it as %s (the largest float), which is what "
        "the UI and searches show; log NaN or a finite cap to keep it apart",
        key,
        value,
        f"{math.copysign(MLFLOW_INFINITY, value):.4g}",
    )
    return True
