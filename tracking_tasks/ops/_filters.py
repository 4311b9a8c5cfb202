"""MLflow search filters: the one place a filter string is built and quoted, and run
filters checked (logged models' grammar is checked in ``_model_filters``)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from tracking_tasks._status import RUN_STATUSES
from tracking_tasks.errors import InvalidSearchError, mlflow_errors


def quote_value(value: str) -> str:
    """Quote a string for an MLflow filter string (single quotes unless it holds one).

    Args:
        value: The string to compare with.

    Returns:
        The quoted literal.

    MLflow's grammar has no escapes: the characters between the quotes are the value.
    But its tokenizer reads a backslash before a quote as an escaped quote, so a literal
    ending in a backslash (``'C:\\data\\'``) closes only where no quote of its kind
    follows in the filter: :func:`and_` puts such clauses last.

    Raises:
        InvalidSearchError: the value holds both quote characters (MLflow's grammar has
            no escape for that).

    Example:
        >>> quote_value("hpo"), quote_value("it's")
        ("'hpo'", '"it\\'s"')
    """
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise InvalidSearchError(
        f"value {value!r} holds both quote characters; MLflow's filter syntax cannot express it"
    )


def tag_equals(key: str, value: str) -> str:
    """A clause matching runs whose tag ``key`` equals ``value`` (key backquoted).

    Args:
        key: The tag key (dots and spaces allowed).
        value: The value.

    Returns:
        E.g. ``tags.`stage` = 'hpo'``.

    Raises:
        InvalidSearchError: the key holds a backquote, or the value both quotes.

    Example:
        >>> tag_equals("tracking_tasks.config_hash", "ab12")
        "tags.`tracking_tasks.config_hash` = 'ab12'"
    """
    if "`" in key:
        raise InvalidSearchError(f"tag key {key!r} holds a backquote; MLflow cannot filter on it")
    return f"tags.`{key}` = {quote_value(str(value))}"


def tag_exists(key: str) -> str:
    """A clause matching runs that carry tag ``key``, whatever its value.

    Args:
        key: The tag key (dots and spaces allowed).

    Returns:
        E.g. ``tags.`prefect.flow_run_id` IS NOT NULL``.

    Raises:
        InvalidSearchError: the key holds a backquote.

    Example:
        >>> tag_exists("prefect.flow_run_id")
        'tags.`prefect.flow_run_id` IS NOT NULL'
    """
    if "`" in key:
        raise InvalidSearchError(f"tag key {key!r} holds a backquote; MLflow cannot filter on it")
    return f"tags.`{key}` IS NOT NULL"


def run_id_in(run_ids: Sequence[str]) -> str:
    """A clause matching the runs with these ids.

    Args:
        run_ids: MLflow run ids (hex strings).

    Returns:
        E.g. ``attributes.run_id IN ('a1', 'b2')``.

    Raises:
        InvalidSearchError: no id, or an id that is not a run id (letters and digits).

    Example:
        >>> run_id_in(["a1", "b2"])
        "attributes.run_id IN ('a1', 'b2')"
    """
    if not run_ids or not all(isinstance(i, str) and i.isalnum() for i in run_ids):
        raise InvalidSearchError(f"run ids must be letters and digits, not {list(run_ids)!r:.80}")
    return f"attributes.run_id IN ({', '.join(quote_value(i) for i in run_ids)})"


def status_equals(status: str) -> str:
    """A clause matching runs in one status (checked: see :func:`check_status`).

    Args:
        status: An MLflow run status, any case.

    Returns:
        E.g. ``attributes.status = 'RUNNING'``.

    Raises:
        InvalidSearchError: not an MLflow run status.

    Example:
        >>> status_equals("running")
        "attributes.status = 'RUNNING'"
    """
    checked = check_status(status)
    assert checked is not None
    return f"attributes.status = {quote_value(checked)}"


#: A clause whose last literal ends in a backslash (``tags.p = 'C:\\'``).
_ENDS_IN_BACKSLASH = re.compile(r"\\(['\"])\s*$")


def and_(*clauses: str) -> str:
    """Join filter clauses with AND, skipping empty ones.

    A clause whose value ends in a backslash goes last: MLflow's tokenizer would read
    its closing quote as escaped and run on into the next clause's quotes, but at the
    end of the filter it finds the literal's real end.

    Args:
        *clauses: Filter strings.

    Returns:
        The conjunction ("" for none).

    Raises:
        InvalidSearchError: several values end in a backslash and no order of them
            parses (each needs no quote of its own kind after it).

    Example:
        >>> and_("metrics.f1 > 0.8", "", tag_equals("stage", "hpo"))
        "metrics.f1 > 0.8 AND tags.`stage` = 'hpo'"
        >>> and_(tag_equals("dir", "C:\\\\"), tag_equals("stage", "hpo"))
        "tags.`stage` = 'hpo' AND tags.`dir` = 'C:\\\\'"
    """
    present = [c for c in clauses if c]
    trailing = [c for c in present if _ENDS_IN_BACKSLASH.search(c)]
    others = [c for c in present if not _ENDS_IN_BACKSLASH.search(c)]
    for order in itertools.permutations(trailing):
        if all(
            _ENDS_IN_BACKSLASH.search(clause)[1] not in "".join(order[i + 1 :])  # type: ignore[index]
            for i, clause in enumerate(order)
        ):
            return " AND ".join([*others, *order])
    raise InvalidSearchError(
        f"{len(trailing)} filter values end in a backslash and MLflow's filter syntax "
        f"cannot hold them together: {trailing}; search with fewer such values at once"
    )


def check_filter(filter_string: str | None) -> str:
    """Check ``filter_string`` as MLflow's server will, before any request; return it stripped.

    MLflow's own grammar parses it, then each clause's comparator is checked for its kind
    of key as the server checks it (MLflow's client-side parser alone accepts
    ``tags.stage == 'sweep'``, which the server refuses).

    Args:
        filter_string: An MLflow filter string, or None.

    Returns:
        The stripped filter ("" for None).

    Raises:
        InvalidSearchError: the filter is not a string or MLflow's parser refuses it.

    Example:
        >>> check_filter("  metrics.f1 > 0.8 ")
        'metrics.f1 > 0.8'
    """
    from mlflow.utils.search_utils import SearchUtils

    if filter_string is None:
        return ""
    if not isinstance(filter_string, str):
        raise InvalidSearchError(
            f'filter_string must be a string such as "metrics.f1 > 0.8", not '
            f"{type(filter_string).__name__}"
        )
    text = filter_string.strip()
    with mlflow_errors(
        f"malformed filter string {text!r}",
        default=InvalidSearchError,
        fix="Write clauses such as \"metrics.f1 > 0.8 AND tags.stage = 'hpo'\" (only AND; "
        "quote string values; backquote keys with dots or spaces: tags.`my.key`)",
    ):
        clauses = SearchUtils.parse_search_filter(text)  # type: ignore[no-untyped-call]
        for clause in clauses:
            _check_comparator(clause, text)
    return text


#: The prefix a filter writes for each kind of key MLflow's parser reports.
_PREFIXES = {"tag": "tags", "metric": "metrics", "parameter": "params", "dataset": "datasets"}


def _check_comparator(clause: dict[str, Any], text: str) -> None:
    """Refuse a comparator the server refuses for this kind of key (its own checks, in the
    order its SQL store applies them; each raises MLflow's INVALID_PARAMETER_VALUE)."""
    from mlflow.utils.search_utils import SearchUtils

    kind, comparator = clause.get("type"), str(clause.get("comparator", "")).upper()
    key = SearchUtils.translate_key_alias(clause.get("key"))  # type: ignore[no-untyped-call]
    if comparator == "==":
        raise InvalidSearchError(
            f"malformed filter string {text!r}: MLflow's filter syntax writes equality as a "
            f"single '=', e.g. \"{_PREFIXES.get(str(kind), 'attributes')}.{key} = ...\""
        )
    rules: Any = SearchUtils  # untyped: MLflow's own checks, each raising when refused
    (  # the first that owns this kind of key decides, as in the server's SQL store
        rules.is_string_attribute(kind, key, comparator)
        or rules.is_numeric_attribute(kind, key, comparator)
        or rules.is_dataset(kind, comparator)
        or rules.is_metric(kind, comparator)
        or rules.is_param(kind, comparator)
        or rules.is_tag(kind, comparator)
    )


def check_order_by(order_by: str | Sequence[str] | None) -> tuple[str, ...]:
    """Parse each ``order_by`` clause with MLflow's grammar; return them as a tuple.

    Args:
        order_by: A clause, a list of clauses, or None.

    Returns:
        The clauses, stripped.

    Raises:
        InvalidSearchError: a clause is malformed or a field is ordered twice.

    Example:
        >>> check_order_by("metrics.f1 DESC")
        ('metrics.f1 DESC',)
    """
    from mlflow.utils.search_utils import SearchUtils

    if order_by is None:
        return ()
    clauses = [order_by] if isinstance(order_by, str) else list(order_by)
    seen: set[tuple[str, str]] = set()
    for clause in clauses:
        if not isinstance(clause, str):
            raise InvalidSearchError(f"order_by clause {clause!r} is not a string")
        with mlflow_errors(
            f"malformed order_by clause {clause!r}",
            default=InvalidSearchError,
            fix='Write e.g. "metrics.f1 DESC" or "attributes.start_time ASC"',
        ):
            key_type, key, _ = SearchUtils.parse_order_by_for_search_runs(clause)  # type: ignore[no-untyped-call]
        if (key_type, key) in seen:
            raise InvalidSearchError(f"order_by names {key_type} {key!r} twice: {clauses}")
        seen.add((key_type, key))
    return tuple(c.strip() for c in clauses)


def check_status(status: str | None) -> str | None:
    """Return ``status`` upper-cased if it is an MLflow run status, else raise.

    Args:
        status: A status, any case, or None.

    Returns:
        The upper-cased status, or None.

    Raises:
        InvalidSearchError: not an MLflow run status.

    Example:
        >>> check_status("finished")
        'FINISHED'
    """
    if status is None:
        return None
    if not isinstance(status, str) or status.strip().upper() not in RUN_STATUSES:
        raise InvalidSearchError(
            f"status {status!r} is not an MLflow run status: use one of {', '.join(RUN_STATUSES)}"
        )
    return status.strip().upper()
