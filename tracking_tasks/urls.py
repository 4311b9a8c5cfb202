"""Tracking-URI inspection: schemes, secrets, and MLflow UI links."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from tracking_tasks.errors import CredentialInURIError, TrackingConfigError

__all__ = [
    "ML_VIEW_QUERY",
    "UI_BASE_URL_ENV",
    "azure_studio_experiment_url",
    "azure_studio_run_url",
    "azureml_workspace_id",
    "azureml_workspace_parts",
    "experiment_url",
    "is_http_uri",
    "model_url",
    "redact_uri",
    "run_url",
    "same_server",
]

#: Schemes MLflow's tracking client understands (the ``+driver`` suffix is stripped first).
KNOWN_SCHEMES = frozenset(
    {"http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "azureml", "file"}
)
#: Query parameters that carry secrets, lower case (a query key matches in any case):
#: passwords, tokens, OAuth client secrets, API keys, and the signatures and session
#: tokens of signed URLs (Azure SAS ``sig``, S3 ``X-Amz-*``, GCS ``X-Goog-Signature``).
#: The one list: ``redact_uri`` hides them and ``check_uri`` refuses them.
_SECRET_QUERY_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "sslpassword",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "secret",
        "client_secret",
        "key",
        "api_key",
        "apikey",
        "access_key",
        "secret_key",
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-security-token",
        "x-amz-credential",
        "x-goog-signature",
        "x-goog-credential",
    }
)
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: ``host:port[/path]`` with no scheme (``127.0.0.1:5000``, ``mlflow:5000``,
#: ``[::1]:5000``): a server's address written without ``http://``.
_HOST_PORT = re.compile(
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"  # a host
    r":(?P<port>\d{1,5})(/\S*)?$"  # a port, and maybe a path
)


def base_scheme(uri: str) -> str:
    """Return the scheme of ``uri`` without a ``+driver`` suffix ("" for a bare path)."""
    return urlsplit(uri).scheme.split("+", 1)[0].lower()


def is_http_uri(uri: str | None) -> bool:
    """Tell whether ``uri`` points at an MLflow tracking server over HTTP(S).

    Args:
        uri: A tracking URI, or None.

    Returns:
        True for ``http://`` and ``https://`` URIs.

    Example:
        >>> is_http_uri("http://127.0.0.1:5000"), is_http_uri("sqlite:///mlflow.db")
        (True, False)
    """
    return uri is not None and base_scheme(uri) in {"http", "https"}


def redact_uri(uri: str) -> str:
    """Return ``uri`` with any password and secret query values replaced by ``***``.

    Use it wherever a URI is shown: logs, tags, error messages.

    Args:
        uri: Any URI.

    Returns:
        The same URI, safe to print.

    Example:
        >>> redact_uri("postgresql://ml:hunter2@db/mlflow")
        'postgresql://ml:***@db/mlflow'
        >>> redact_uri("https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&X-Amz-Expires=60")
        'https://b.s3.amazonaws.com/k?X-Amz-Signature=***&X-Amz-Expires=60'
    """
    parts = urlsplit(uri)
    secret_query = any(k.lower() in _SECRET_QUERY_KEYS for k, _ in parse_qsl(parts.query))
    if parts.password is None and not secret_query:
        return uri  # nothing to hide; urlunsplit would also mangle sqlite:////abs paths
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{key}={'***' if key.lower() in _SECRET_QUERY_KEYS else value}" for key, value in pairs
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_uri(uri: str, field: str) -> str:
    """Validate a tracking or registry URI; return it stripped.

    Raises:
        CredentialInURIError: the URI carries a password or a secret query value.
        TrackingConfigError: the URI is empty, has an unknown scheme, or names MLflow's
            file store while ``MLFLOW_ALLOW_FILE_STORE`` is not true.
    """
    uri = uri.strip()
    if not uri:
        raise TrackingConfigError(f"{field} is empty: give a URI such as {DEFAULT_TRACKING_URI!r}")
    parts = urlsplit(uri)
    if parts.password is not None:
        raise CredentialInURIError(
            f"{field} {redact_uri(uri)!r} carries a password. Remove it from the URI: for an "
            "MLflow server set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
            "MLFLOW_TRACKING_TOKEN); for PostgreSQL set PGPASSWORD or use ~/.pgpass."
        )
    secret_keys = sorted(
        key for key, _ in parse_qsl(parts.query) if key.lower() in _SECRET_QUERY_KEYS
    )
    if secret_keys:
        raise CredentialInURIError(
            f"{field} {redact_uri(uri)!r} carries a secret in its query ({', '.join(secret_keys)}). "
            "Pass credentials through MLflow's environment variables instead."
        )
    if "://" not in uri and (address := _HOST_PORT.match(uri)):
        scheme = "https" if address["port"] == "443" else "http"
        raise TrackingConfigError(
            f"{field} {uri!r} has no scheme: did you mean '{scheme}://{uri}'? A tracking server "
            f"is named by an http:// or https:// URI, a local store by e.g. "
            f"{DEFAULT_TRACKING_URI!r}."
        )
    scheme = base_scheme(uri)
    is_bare_path = scheme == "" or (len(scheme) == 1 and os.name == "nt")
    if scheme == "file" or is_bare_path:
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() not in {"true", "1"}:
            target = parts.path if scheme == "file" else uri
            suggestion = f"sqlite:///{Path(target).expanduser() / 'mlflow.db'}"
            raise TrackingConfigError(
                f"{field} {uri!r} names MLflow's file store, which MLflow 3 refuses. Use a "
                f"SQLite store instead, e.g. {suggestion!r}, or set MLFLOW_ALLOW_FILE_STORE=true "
                "to keep the file store."
            )
        return uri
    if scheme not in KNOWN_SCHEMES:
        raise TrackingConfigError(
            f"{field} {uri!r} has an unknown scheme {scheme!r}: use one of "
            f"{', '.join(sorted(KNOWN_SCHEMES - {'file'}))} (for example "
            f"'http://127.0.0.1:5000' or {DEFAULT_TRACKING_URI!r})"
        )
    if scheme in {"http", "https"} and not parts.hostname:
        raise TrackingConfigError(
            f"{field} {uri!r} has no host: write e.g. 'http://127.0.0.1:5000'"
        )
    return uri


def absolute_local_uri(uri: str) -> str:
    """Make a relative ``sqlite:///rel.db`` absolute, so other processes hit the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        path = uri[len(prefix) :]
        return prefix + str(Path(path).expanduser().resolve())
    return uri


def same_server(first: str, second: str) -> bool:
    """Tell whether two tracking URIs name the same server (the one comparison of servers).

    A relative SQLite path is made absolute and a trailing ``/`` ignored; nothing else is
    normalised, so ``localhost`` and ``127.0.0.1`` are two servers (credentials, parents
    and contexts never cross between two spellings either).

    Args:
        first: A tracking URI.
        second: Another tracking URI.

    Returns:
        True when they name the same server.

    Example:
        >>> same_server("http://127.0.0.1:5000/", "http://127.0.0.1:5000")
        True
        >>> same_server("http://127.0.0.1:5000", "http://localhost:5000")
        False
    """
    return absolute_local_uri(first).rstrip("/") == absolute_local_uri(second).rstrip("/")


#: Environment variable naming the MLflow UI's address when it differs from the tracking URI.
UI_BASE_URL_ENV = "TRACKING_TASKS_UI_BASE_URL"
#: Opens MLflow 3's "Model training" view (runs table, nested runs, models) instead of the
#: GenAI view (traces, "Evaluation runs") a fresh browser gets by default; the run page
#: reads it too (its breadcrumb and side bar).
ML_VIEW_QUERY = "?workflowType=machine_learning"
AZURE_ML_STUDIO = "https://ml.azure.com"
_AZUREML_WORKSPACE = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
    r"/providers/microsoft\.machinelearningservices/workspaces/(?P<ws>[^/?#]+)",
    re.IGNORECASE,
)


def _strip_to_base(url: str) -> str | None:
    """``scheme://host[:port]/path`` of an http(s) URL: no user info, query or fragment."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


def azureml_workspace_id(tracking_uri: str) -> str | None:
    """Return the studio ``wsid`` of an ``azureml://`` tracking URI, or None.

    Args:
        tracking_uri: A URI such as ``azureml://<region>.api.azureml.ms/mlflow/v1.0/
            subscriptions/<sub>/resourceGroups/<rg>/providers/
            Microsoft.MachineLearningServices/workspaces/<ws>``.

    Returns:
        ``/subscriptions/<sub>/resourcegroups/<rg>/workspaces/<ws>``, or None when the URI
        is not an Azure ML one or does not name a workspace.

    Example:
        >>> azureml_workspace_id("azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/"
        ...     "s1/resourceGroups/rg1/providers/Microsoft.MachineLearningServices/workspaces/w1")
        '/subscriptions/s1/resourcegroups/rg1/workspaces/w1'
    """
    parts = azureml_workspace_parts(tracking_uri)
    if parts is None:
        return None
    sub, rg, ws = parts
    return f"/subscriptions/{sub}/resourcegroups/{rg}/workspaces/{ws}"


def azureml_workspace_parts(tracking_uri: str) -> tuple[str, str, str] | None:
    """Return ``(subscription, resource group, workspace)`` an ``azureml://`` URI names.

    Args:
        tracking_uri: Any tracking URI.

    Returns:
        The three names as the URI spells them, or None when the URI is not an Azure ML
        workspace one.

    Example:
        >>> azureml_workspace_parts("azureml://westeurope.api.azureml.ms/mlflow/v1.0/"
        ...     "subscriptions/s1/resourceGroups/rg1/providers/"
        ...     "Microsoft.MachineLearningServices/workspaces/w1")
        ('s1', 'rg1', 'w1')
    """
    if base_scheme(tracking_uri) != "azureml":
        return None
    match = _AZUREML_WORKSPACE.search(urlsplit(tracking_uri).path)
    return None if match is None else (match["sub"], match["rg"], match["ws"])


def azure_studio_experiment_url(tracking_uri: str, experiment_id: str) -> str | None:
    """Return the Azure ML studio page of an experiment tracked to an ``azureml://`` URI.

    Args:
        tracking_uri: An ``azureml://<region>.api.azureml.ms/mlflow/v1.0/subscriptions/
            <sub>/resourceGroups/<rg>/providers/Microsoft.MachineLearningServices/
            workspaces/<ws>`` tracking URI.
        experiment_id: The MLflow experiment id.

    Returns:
        ``https://ml.azure.com/experiments/id/<id>?wsid=/subscriptions/<sub>/
        resourcegroups/<rg>/workspaces/<ws>``, or None when the URI is not an Azure ML
        workspace URI.

    Example:
        >>> uri = ("azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s/"
        ...        "resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws")
        >>> azure_studio_experiment_url(uri, "e1")
        'https://ml.azure.com/experiments/id/e1?wsid=/subscriptions/s/resourcegroups/rg/workspaces/ws'
    """
    wsid = azureml_workspace_id(tracking_uri)
    if wsid is None:
        return None
    return f"{AZURE_ML_STUDIO}/experiments/id/{quote(experiment_id, safe='')}?wsid={wsid}"


def azure_studio_run_url(tracking_uri: str, run_id: str) -> str | None:
    """Return the Azure ML studio page of a run tracked to an ``azureml://`` URI.

    The studio shows a nested run under its parent from the ``mlflow.parentRunId`` tag,
    which ``create_mlflow_run`` sets when given ``parent_run_id``.

    Args:
        tracking_uri: An ``azureml://`` workspace tracking URI (see
            :func:`azure_studio_experiment_url`).
        run_id: The MLflow run id.

    Returns:
        ``https://ml.azure.com/runs/<run_id>?wsid=/subscriptions/<sub>/resourcegroups/
        <rg>/workspaces/<ws>``, or None when the URI is not an Azure ML workspace URI.

    Example:
        >>> uri = ("azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s/"
        ...        "resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws")
        >>> azure_studio_run_url(uri, "abc")
        'https://ml.azure.com/runs/abc?wsid=/subscriptions/s/resourcegroups/rg/workspaces/ws'
    """
    wsid = azureml_workspace_id(tracking_uri)
    if wsid is None:
        return None
    return f"{AZURE_ML_STUDIO}/runs/{quote(run_id, safe='')}?wsid={wsid}"


def _ui_base(tracking_uri: str, ui_base_url: str | None) -> str | None:
    """The MLflow UI's base: explicit > ``$TRACKING_TASKS_UI_BASE_URL`` > the http(s) server."""
    configured = ui_base_url or os.environ.get(UI_BASE_URL_ENV, "").strip()
    if configured:
        return _strip_to_base(configured)
    if not is_http_uri(tracking_uri):
        return None
    return _strip_to_base(tracking_uri)


def experiment_url(
    tracking_uri: str,
    experiment_id: str,
    *,
    ui_base_url: str | None = None,
    workspace: str | None = None,
) -> str | None:
    """Return the UI page of an experiment, or None where there is no UI to link to.

    The UI is found in this order: ``ui_base_url``, then ``$TRACKING_TASKS_UI_BASE_URL``
    (for a server behind a proxy, whose UI address differs from the tracking URI), then
    the http(s) tracking server itself. An ``azureml://`` URI links to Azure ML studio.
    Local stores (SQLite, a database URI) give None rather than a dead link. User info,
    query and fragment of either URI never reach the link.

    Args:
        tracking_uri: The tracking URI the experiment lives on.
        experiment_id: The MLflow experiment id.
        ui_base_url: The MLflow UI's address, e.g. ``https://mlflow.example.com/mlflow``.
        workspace: The MLflow workspace the experiment is in (the UI opens it there).

    Returns:
        ``<ui>/#/experiments/<id>?workflowType=machine_learning`` (MLflow's "Model
        training" view; ``&workspace=<name>`` added for a workspace),
        ``https://ml.azure.com/experiments/id/<id>?wsid=...`` for Azure ML, or None.

    Example:
        >>> experiment_url("http://127.0.0.1:5000", "3")
        'http://127.0.0.1:5000/#/experiments/3?workflowType=machine_learning'
        >>> experiment_url("http://mlflow:5000", "3", ui_base_url="https://ml.example.com/mlflow/")
        'https://ml.example.com/mlflow/#/experiments/3?workflowType=machine_learning'
        >>> experiment_url("http://127.0.0.1:5000", "3", workspace="team-a")
        'http://127.0.0.1:5000/#/experiments/3?workflowType=machine_learning&workspace=team-a'
    """
    studio = azure_studio_experiment_url(tracking_uri, experiment_id)
    if studio is not None:
        return studio
    base = _ui_base(tracking_uri, ui_base_url)
    page = f"/#/experiments/{experiment_id}"
    return None if base is None else f"{base}{page}{_page_query(workspace)}"


def _page_query(workspace: str | None) -> str:
    """The query of a UI page: MLflow's "Model training" view, and the workspace the UI
    reads a page's from (names need no quoting)."""
    return ML_VIEW_QUERY + (f"&workspace={workspace}" if workspace else "")


def run_url(
    tracking_uri: str,
    experiment_id: str,
    run_id: str,
    *,
    ui_base_url: str | None = None,
    workspace: str | None = None,
) -> str | None:
    """Return the UI page of a run, or None where there is no UI to link to.

    The UI is found as in :func:`experiment_url`: ``ui_base_url``, then
    ``$TRACKING_TASKS_UI_BASE_URL``, then the http(s) tracking server; an ``azureml://``
    URI links to the run in Azure ML studio; local stores give None.

    Args:
        tracking_uri: The tracking URI the run lives on.
        experiment_id: The run's experiment id.
        run_id: The MLflow run id.
        ui_base_url: The MLflow UI's address when it differs from the tracking URI.
        workspace: The MLflow workspace the run is in (``&workspace=<name>`` is added).

    Returns:
        ``<ui>/#/experiments/<exp>/runs/<run>?workflowType=machine_learning``,
        ``https://ml.azure.com/runs/<run>?wsid=/subscriptions/...`` for Azure ML, or None.

    Example:
        >>> run_url("http://127.0.0.1:5000", "3", "abc")
        'http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning'
        >>> run_url("azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s1/"
        ...     "resourceGroups/rg1/providers/Microsoft.MachineLearningServices/workspaces/w1",
        ...     "3", "abc")
        'https://ml.azure.com/runs/abc?wsid=/subscriptions/s1/resourcegroups/rg1/workspaces/w1'
    """
    studio = azure_studio_run_url(tracking_uri, run_id)
    if studio is not None:
        return studio
    base = _ui_base(tracking_uri, ui_base_url)
    page = f"/#/experiments/{experiment_id}/runs/{run_id}"
    return None if base is None else f"{base}{page}{_page_query(workspace)}"


def model_url(
    tracking_uri: str,
    experiment_id: str,
    model_id: str,
    *,
    ui_base_url: str | None = None,
    workspace: str | None = None,
) -> str | None:
    """Return the MLflow UI page of a logged model (MLflow 3), or None where there is none.

    The UI is found as in :func:`experiment_url`; local stores and ``azureml://`` URIs
    give None (Azure ML studio has no page for an MLflow 3 logged model).

    Args:
        tracking_uri: The tracking URI the model lives on.
        experiment_id: The model's experiment id.
        model_id: The logged model's id (``m-...``).
        ui_base_url: The MLflow UI's address when it differs from the tracking URI.
        workspace: The MLflow workspace the model lives in, if any.

    Returns:
        ``<ui>/#/experiments/<exp>/models/<model id>``, or None.

    Example:
        >>> model_url("http://127.0.0.1:5000", "3", "m-abc")
        'http://127.0.0.1:5000/#/experiments/3/models/m-abc?workflowType=machine_learning'
    """
    if azureml_workspace_id(tracking_uri) is not None:
        return None
    base = _ui_base(tracking_uri, ui_base_url)
    page = f"/#/experiments/{experiment_id}/models/{model_id}"
    return None if base is None else f"{base}{page}{_page_query(workspace)}"
