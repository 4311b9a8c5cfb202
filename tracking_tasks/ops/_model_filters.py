"""Logged-model filters (MLflow 3): ``search_logged_models`` has a grammar of its own,
checked here before a request; values are quoted by ``_filters.quote_value``."""

from __future__ import annotations

from collections.abc import Sequence

from tracking_tasks._status import MODEL_STATUSES
from tracking_tasks.errors import InvalidSearchError, mlflow_errors
from tracking_tasks.ops._filters import and_, quote_value

#: The attributes a logged-model filter may name (an unknown one is an HTTP 500 that
#: MLflow's client retries for minutes, so it is refused here).
MODEL_ATTRIBUTES = frozenset({
    "name", "model_id", "model_type", "source_run_id", "status", "status_message",
    "artifact_location", "creation_time", "creation_timestamp", "creation_timestamp_ms",
    "last_updated_timestamp", "last_updated_timestamp_ms",
})  # fmt: skip
_MODEL_FIX = (
    "Write clauses such as \"metrics.accuracy > 0.9 AND params.alpha = '0.01' AND "
    "name = 'digits'\" (only AND; quote string values; attributes: "
    + ", ".join(sorted(MODEL_ATTRIBUTES))
    + ")"
)


def attribute_in(attribute: str, values: Sequence[str]) -> str:
    """A logged-model clause matching an attribute among ``values``.

    Args:
        attribute: A logged-model attribute (``source_run_id``, ``name``...).
        values: The values (at least one).

    Returns:
        E.g. ``source_run_id IN ('a', 'b')``.

    Raises:
        InvalidSearchError: an unknown attribute, no value, or a value with both quotes.

    Example:
        >>> attribute_in("source_run_id", ["r1", "r2"])
        "source_run_id IN ('r1', 'r2')"
    """
    if attribute not in MODEL_ATTRIBUTES:
        raise InvalidSearchError(f"{attribute!r} is not a logged-model attribute")
    if not values:
        raise InvalidSearchError(f"{attribute} IN (...) needs at least one value")
    return f"{attribute} IN ({', '.join(quote_value(str(v)) for v in values)})"


def check_model_status(status: str | None) -> str | None:
    """Return ``status`` upper-cased if it is a logged-model status, else raise.

    Args:
        status: ``PENDING``, ``READY`` or ``FAILED`` (any case), or None.

    Returns:
        The upper-cased status, or None.

    Raises:
        InvalidSearchError: not a logged-model status.

    Example:
        >>> check_model_status("ready")
        'READY'
    """
    if status is None:
        return None
    name = str(status).strip().upper()
    if name not in MODEL_STATUSES:
        raise InvalidSearchError(
            f"status {status!r} is not a logged-model status: use one of "
            f"{', '.join(MODEL_STATUSES)}"
        )
    return name


def check_model_filter(filter_string: str | None) -> str:
    """Check a ``search_logged_models`` filter with MLflow's own parser; return it stripped.

    Beyond MLflow's parser: every attribute must be one the server knows (an unknown one
    fails there with HTTP 500, which MLflow's client retries for about four minutes),
    and ``status`` is left to the finders' ``status=`` argument (see ``MODEL_STATUSES``).

    Args:
        filter_string: A logged-model filter, or None.

    Returns:
        The stripped filter ("" for None).

    Raises:
        InvalidSearchError: the parser refuses it, an unknown attribute, or a status
            clause.

    Example:
        >>> check_model_filter(" metrics.accuracy > 0.9 AND name = 'digits' ")
        "metrics.accuracy > 0.9 AND name = 'digits'"
    """
    if filter_string is None:
        return ""
    if not isinstance(filter_string, str):
        raise InvalidSearchError(
            'filter_string must be a string such as "metrics.accuracy > 0.9", not '
            f"{type(filter_string).__name__}"
        )
    text = filter_string.strip()
    with mlflow_errors(
        f"malformed logged-model filter {text!r}", default=InvalidSearchError, fix=_MODEL_FIX
    ):
        from mlflow.utils.search_logged_model_utils import EntityType, parse_filter_string

        comparisons = parse_filter_string(text)
    for comparison in comparisons:
        if comparison.entity.type != EntityType.ATTRIBUTE:
            continue
        key = comparison.entity.key
        if key not in MODEL_ATTRIBUTES:
            raise InvalidSearchError(
                f"malformed logged-model filter {text!r}: {key!r} is not a logged-model "
                f"attribute. {_MODEL_FIX}; metrics, params and tags are metrics.<key>, "
                "params.<key>, tags.<key>"
            )
        if key == "status":
            raise InvalidSearchError(
                f"logged-model filter {text!r} compares status: MLflow's server compares "
                "that integer column with text (on SQLite a name matches nothing, on "
                "PostgreSQL the search fails). Pass status='READY' (or PENDING, FAILED) to "
                "the finder instead: it filters on the client"
            )
    return text


def check_model_order_by(order_by: str | Sequence[str] | None) -> tuple[tuple[str, bool], ...]:
    """Check logged-model ``order_by`` clauses; return ``(field, ascending)`` pairs.

    A clause is ``"<field> [ASC|DESC]"`` where the field is ``metrics.<key>`` (the
    model's latest value) or an attribute (``name``, ``creation_time``...).

    Args:
        order_by: A clause, a list of clauses, or None.

    Returns:
        The checked ``(field, ascending)`` pairs.

    Raises:
        InvalidSearchError: a malformed clause, an unknown field, or a field twice.

    Example:
        >>> check_model_order_by(["metrics.accuracy DESC", "name"])
        (('metrics.accuracy', False), ('name', True))
    """
    if order_by is None:
        return ()
    clauses = [order_by] if isinstance(order_by, str) else list(order_by)
    checked: list[tuple[str, bool]] = []
    for clause in clauses:
        if not isinstance(clause, str) or not clause.strip():
            raise InvalidSearchError(f"order_by clause {clause!r} is not a non-empty string")
        parts = clause.split()
        direction = parts[-1].upper() if len(parts) > 1 else "ASC"
        field_name = " ".join(parts[:-1]) if len(parts) > 1 else parts[0]
        if direction not in ("ASC", "DESC") or " " in field_name:
            raise InvalidSearchError(
                f'malformed order_by clause {clause!r}: write e.g. "metrics.accuracy DESC" '
                'or "creation_time ASC"'
            )
        entity, dot, key = field_name.partition(".")
        if dot and entity == "metrics" and key.strip("`"):
            field_name = f"metrics.{key.strip('`')}"
        elif dot or field_name not in MODEL_ATTRIBUTES:
            raise InvalidSearchError(
                f"order_by clause {clause!r}: logged models are ordered by metrics.<key> or "
                f"an attribute ({', '.join(sorted(MODEL_ATTRIBUTES))}), not params or tags"
            )
        if any(name == field_name for name, _ in checked):
            raise InvalidSearchError(f"order_by names {field_name!r} twice: {clauses}")
        checked.append((field_name, direction == "ASC"))
    return tuple(checked)


def model_version_filter(name: str, *, run_id: str | None = None, source: str | None = None) -> str:
    """A ``search_model_versions`` filter: one registered model's versions, optionally
    of one run or one source (``source_path``; the registry has no ``model_id`` filter).

    Args:
        name: The registered model's name.
        run_id: Only versions registered from this run.
        source: Only versions with this source (``models:/<model id>``).

    Returns:
        The filter.

    Raises:
        InvalidSearchError: a value holds both quote characters.

    Example:
        >>> model_version_filter("digits", source="models:/m-1")
        "name = 'digits' AND source_path = 'models:/m-1'"
    """
    return and_(
        f"name = {quote_value(name)}",
        f"run_id = {quote_value(run_id)}" if run_id is not None else "",
        f"source_path = {quote_value(source)}" if source is not None else "",
    )
