"""The layout holds: layers, no import cycles, one home per rule, an honest public surface."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracking_tasks

PACKAGE = Path(tracking_tasks.__file__).resolve().parent
REPO = PACKAGE.parent
MAX_LINES = 420

#: Every public name, by public module. A name added to (or dropped from) an ``__all__``
#: fails here until it is listed: the public surface changes on purpose only.
PUBLIC_API: dict[str, tuple[str, ...]] = {
    "tracking_tasks": (
        "ArtifactManifest", "AzureMLWorkspace", "BenchmarkOutput", "BenchmarkResult",
        "CheckpointArtifacts", "ConversionOutput", "ConversionResult", "MlflowCredentials",
        "ModelRef", "RunLogger", "RunRef", "RunSummary", "StageContext", "StageOutput",
        "StageResult", "SweepResult", "TrackingConfig", "TrackingContext",
        "TrackingTasksError", "TrialSummary", "__version__", "config_hash",
        "create_mlflow_run", "download_artifacts", "end_mlflow_run", "find_best_run",
        "find_mlflow_runs", "find_run_by_config_hash", "find_runs_for_flow_run",
        "get_run_summary", "log_best_checkpoint", "log_metrics", "log_model", "log_params",
        "mlflow_state_hooks", "promote_model", "register_model", "register_model_version",
        "set_tags", "setup_mlflow", "track_benchmark", "track_conversion", "track_sweep",
        "track_training", "upload_artifacts",
    ),
    "tracking_tasks.auth": (
        "BasicAuth", "BearerToken", "Credential", "MlflowCredentials", "Origin",
        "ServerCredentials", "TokenProvider", "TokenSource", "allow_token_provider",
        "authorization_for", "clear_scoped_credentials", "scoped_origins",
    ),
    "tracking_tasks.azure_ml": (
        "get_azure_tracking_uri", "make_ml_client", "workspace_of",
    ),
    "tracking_tasks.cli": (
        "main",
    ),
    "tracking_tasks.compat": (
        "MLflowBenchmarkTracker", "MLflowConversionTracker", "MLflowSweepTracker",
        "MLflowTrainingTracker", "StageTracker",
    ),
    "tracking_tasks.config": (
        "AzureMLWorkspace", "DEFAULT_EXPERIMENT_NAME", "ENV_VARS", "TrackingConfig",
        "resolve_tracking_config", "resolve_tracking_uri",
    ),
    "tracking_tasks.errors": (
        "ArtifactError", "ArtifactNotFoundError", "ArtifactVerificationError",
        "AzureAuthenticationError", "AzureWorkspaceError", "ConfigHashError",
        "CredentialInURIError", "ExperimentNotFoundError", "ExperimentSetupError",
        "InvalidArgumentError", "InvalidLogDataError", "InvalidParentRunError",
        "InvalidSearchError", "LocalArtifactPathError", "LoggedModelError",
        "MissingExtraError", "ModelNotFoundError", "ModelRegistryError", "NotFoundError",
        "RunCreationError", "RunEndError", "RunNotFoundError", "RunSearchError", "StageError",
        "StageOutputError", "SweepFailedError", "TrackingConfigError", "TrackingServerError",
        "TrackingTasksError", "TransientArtifactError", "UnsafeArtifactPathError",
        "error_code", "http_status_error", "is_transient", "mlflow_errors", "transfer_error",
    ),
    "tracking_tasks.handles": (
        "ModelRef", "RunRef", "RunSummary", "RunSummaryData", "RunSummaryInfo",
        "TrackingContext",
    ),
    "tracking_tasks.hashing": (
        "SHORT_HASH_LENGTH", "canonical_json", "config_hash",
    ),
    "tracking_tasks.ops": (
        "ArtifactManifest", "CheckpointArtifacts", "FlowRunStates", "MANIFEST_NAME",
        "ManifestEntry", "ModelSummary", "ModelVersion", "PromotionDecision",
        "RETRY_AFTER_ATTEMPTS", "RETRY_AFTER_MAX_SECONDS", "ReconcileReport", "RunHandle",
        "RunLogger", "RunStatus", "create_mlflow_run", "download_artifacts", "end_mlflow_run",
        "find_best_model", "find_best_run", "find_logged_models", "find_mlflow_runs",
        "find_run_by_config_hash", "find_runs_for_flow_run", "get_model_summary",
        "get_model_version", "get_run_summary", "latest_model_version", "load_model",
        "log_best_checkpoint", "log_metrics", "log_model", "log_model_metrics", "log_params",
        "promote_model", "reconcile_runs", "register_model", "register_model_version",
        "set_model_alias", "set_tags", "setup_mlflow", "upload_artifacts", "workspace_scope",
    ),
    "tracking_tasks.tags": (
        "BEST_RUN_TAG", "BEST_TRIAL_TAG", "CONFIG_HASH_TAG", "DEPLOYMENT_ID_TAG",
        "DEPLOYMENT_NAME_TAG", "FINAL_STATE_TAG", "FLOW_NAME_TAG", "FLOW_RUN_NAME_TAG",
        "FLOW_RUN_TAG", "GROUP_TAG", "IDENTITY_TAG", "INTERRUPTED_ATTR", "LINEAGE_TAG_PREFIX",
        "MACHINE_TAG_PREFIX", "MODEL_FAILURE_TAG", "MODEL_IDENTITY_TAG", "PARENT_RUN_TAG",
        "PREFECT_API_TAG", "PROMOTION_TAG_PREFIX", "PRUNED_TAG", "RECONCILED_TAG",
        "RECONCILE_OVERRULED_TAG", "REFIT_COMPLETED_TAG", "SEED_STAGE_NAMES", "STAGES",
        "STAGE_TAG", "STUDY_TAG", "SWEEP_RUN_ATTR", "TASK_RUN_TAG", "TRIAL_CHECKPOINT_ATTR",
        "TRIAL_INDEX_TAG", "TRIAL_RUN_ATTR", "lineage_tag", "parse_flow_run_id",
        "promotion_tag", "stage_run_name", "trial_run_name",
    ),
    "tracking_tasks.tasks": (
        "FlowStateHooks", "LookupCachePolicy", "SetupCachePolicy", "allow_stale",
        "create_mlflow_run", "download_artifacts", "end_mlflow_run", "find_best_model",
        "find_best_run", "find_logged_models", "find_mlflow_runs", "find_run_by_config_hash",
        "find_runs_for_flow_run", "get_model_version", "latest_model_version",
        "log_best_checkpoint", "log_metrics", "log_model", "log_model_metrics", "log_params",
        "mlflow_state_hooks", "prefect_api_identity", "promote_model", "read_flow_run_states",
        "reconcile_mlflow_runs", "register_model", "register_model_version",
        "retry_on_transient_fault", "set_model_alias", "set_tags", "setup_mlflow",
        "state_to_run_status", "upload_artifacts",
    ),
    "tracking_tasks.trackers": (
        "BenchmarkOutput", "BenchmarkResult", "ConversionOutput", "ConversionResult",
        "StageContext", "StageOutput", "StageResult", "SweepResult", "TrialSummary",
        "latency_summary", "track_benchmark", "track_conversion", "track_sweep",
        "track_training",
    ),
    "tracking_tasks.urls": (
        "ML_VIEW_QUERY", "UI_BASE_URL_ENV", "azure_studio_experiment_url",
        "azure_studio_run_url", "azureml_workspace_id", "azureml_workspace_parts",
        "experiment_url", "is_http_uri", "model_url", "redact_uri", "run_url", "same_server",
    ),
}  # fmt: skip

#: Modules over MAX_LINES, each with the reason it stays whole.
LONG_MODULES = {
    "tracking_tasks.errors": "the exception tree and every translation into it: one home",
    "tracking_tasks.ops._logging": "the batch splitter, the one-shot functions and RunLogger "
    "share one send path (send_batch) and its delivery rule",
    "tracking_tasks.ops._artifacts.http_transport": "the pool, its TLS and proxy set-up and "
    "the transport that uses them are one piece",
    "tracking_tasks.urls": "every URI rule and UI link, the one public module users read them "
    "from (split, its private half would re-export through it)",
}

#: The layers, bottom to top: a module may import modules of its own layer or below.
#: The plain layers never import Prefect; auth's Block (and the package that exports
#: it) is the one credentials module on Prefect.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "_version",
        "_private_apis",
        "errors",
        "tags",
        "hashing",
        "urls",
        "_validation",
        "_status",
        "_cli_text",
    ),
    ("handles", "config", "_environment"),
    ("auth",),
    ("azure_ml", "ops"),
    ("auth._block", "tasks"),
    ("trackers",),
    ("compat", "cli"),
)
PREFECT_UNITS = ("auth._block", "auth", "tasks", "trackers", "compat", "cli", "_private_apis")
# (_private_apis touches Prefect's private names lazily, inside the one function the
# Prefect layer calls; the plain layer imports it for MLflow's)
#: Modules that may import another library's private names (and only they).
PRIVATE_API_HOME = "tracking_tasks._private_apis"


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _is_public(module: str) -> bool:
    return not any(part.startswith("_") for part in module.split(".")[1:])


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _unit(module: str) -> str | None:
    """The layer unit a module belongs to (``auth._block`` is one of its own)."""
    rest = module.split(".")[1:]
    if not rest:
        return None
    if rest[:2] == ["auth", "_block"]:
        return "auth._block"
    if rest == ["auth"]:  # the package's __init__ exports the Block
        return "auth._block"
    return rest[0]


def _layer(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"{unit!r} is in no layer: add it to LAYERS")


def test_every_public_name_is_listed() -> None:
    found = {
        module: tuple(sorted(importlib.import_module(module).__all__))
        for module, _ in _modules()
        if _is_public(module)
    }
    assert found == {module: tuple(sorted(names)) for module, names in PUBLIC_API.items()}


def test_every_public_name_exists_and_is_documented() -> None:
    for module, names in PUBLIC_API.items():
        loaded = importlib.import_module(module)
        for name in names:
            obj = getattr(loaded, name)  # AttributeError: listed but missing
            if inspect.isclass(obj) or inspect.isfunction(obj) or hasattr(obj, "fn"):
                doc = getattr(obj, "__doc__", None) or ""
                assert doc.strip(), f"{module}.{name} has no docstring"


def test_private_modules_declare_no_public_names() -> None:
    offenders = [
        module
        for module, path in _modules()
        if not _is_public(module) and "__all__" in path.read_text()
    ]
    assert offenders == []


def test_each_public_module_has_one_reference_page_and_no_private_one() -> None:
    directives: list[str] = []
    for page in (REPO / "docs" / "reference").rglob("*.md"):
        directives += re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.M)
    assert sorted(directives) == sorted(PUBLIC_API)


def test_the_card_is_short_and_its_functions_have_examples() -> None:
    names = [n for n in tracking_tasks.__all__ if n != "__version__"]
    # 45 since the models (#20) added ModelRef, log_model, register_model and
    # promote_model: what a flow that ships a model writes (the rest stays in tasks)
    assert len(names) <= 45, f"{len(names)} names on the card"
    for name in names:
        obj = getattr(tracking_tasks, name)
        doc = getattr(obj, "__doc__", None) or ""
        if callable(obj) and not isinstance(obj, type):
            assert "Example" in doc and ("Returns" in doc or "Args" in doc), name


@pytest.mark.parametrize("module", [m for m, _ in _modules() if _unit(m) is not None])
def test_a_module_imports_only_its_layer_and_below(module: str) -> None:
    unit = _unit(module)
    assert unit is not None
    path = dict(_modules())[module]
    bad = []
    for name in _imports(path):
        if name.split(".")[0] == "prefect" and unit not in PREFECT_UNITS:
            bad.append(name)
        if not name.startswith("tracking_tasks.") or name == module:
            continue
        other = _unit(name)
        if other is not None and other != unit and _layer(other) > _layer(unit):
            bad.append(name)
    assert bad == [], f"{module} ({unit}) imports {sorted(set(bad))}"


def _graph(key: object) -> dict[str, set[str]]:
    modules = dict(_modules())
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        if module == "tracking_tasks":
            continue  # the card imports everything and nothing imports it
        node = key(module)  # type: ignore[operator]
        edges = {
            key(name)  # type: ignore[operator]
            for name in _imports(path)
            if name in modules and name != "tracking_tasks"
        }
        graph.setdefault(node, set()).update(e for e in edges if e != node)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path_so_far = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join([*path_so_far, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path_so_far, nxt]))
    return cycles


def test_no_module_imports_one_that_imports_it_back() -> None:
    # a package imports its own submodules to re-export them: that pair is no cycle
    graph = _graph(lambda m: m)
    for module in list(graph):
        graph[module] = {
            other
            for other in graph[module]
            if not other.startswith(module + ".") and not module.startswith(other + ".")
        }
    assert _cycles(graph) == []


def test_no_package_imports_one_that_imports_it_back() -> None:
    assert _cycles(_graph(lambda m: m.split(".")[1])) == []


def test_no_module_is_over_the_limit_without_a_listed_reason() -> None:
    long = sorted(
        f"{module}: {path.read_text().count(chr(10))} lines"
        for module, path in _modules()
        if path.read_text().count("\n") > MAX_LINES and module not in LONG_MODULES
    )
    assert long == []
    still_long = {m for m, p in _modules() if p.read_text().count("\n") > MAX_LINES}
    assert set(LONG_MODULES) <= still_long, "an exception no longer needed: drop it"


#: The one module that calls a task's function itself: a library task called outside a
#: flow run is its plain function (``tasks/_task.py``'s ``TrackingTask``).
TASK_CLASS_HOME = PACKAGE / "tasks" / "_task.py"


def test_the_library_and_flows_never_call_fn_on_their_tasks() -> None:
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "flows").glob("*.py")]:
        if path == TASK_CLASS_HOME:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "fn":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_environment_is_written_in_one_place() -> None:
    writes = re.compile(
        r"os\.environ\[[^]]+\]\s*=|os\.environ\.(pop|setdefault|update|clear)\(|"
        r"del os\.environ|os\.putenv"
    )
    offenders = [
        f"{path.relative_to(REPO)}"
        for path in PACKAGE.rglob("*.py")
        if writes.search(path.read_text()) and path.name != "_environment.py"
    ]
    assert offenders == []


def test_other_libraries_private_names_are_used_in_one_place() -> None:
    """``from mlflow... import _x``, ``getattr(obj, "_x")`` and ``obj._x`` on another
    library's object live in ``_private_apis.py`` only (our own ``self._x`` aside)."""
    ours = re.compile(r"^_tt_")  # attributes we set on foreign objects ourselves
    offenders = []
    for module, path in _modules():
        if module == PRIVATE_API_HOME:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                foreign = not node.module.startswith("tracking_tasks")
                if foreign and (
                    any(a.name.startswith("_") and not a.name.startswith("__") for a in node.names)
                    or any(
                        p.startswith("_") and not p.startswith("__") for p in node.module.split(".")
                    )
                ):
                    offenders.append(f"{module}:{node.lineno} from {node.module}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"getattr", "hasattr", "setattr"}
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and node.args[1].value.startswith("_")
                and not node.args[1].value.startswith("__")
                and not ours.match(node.args[1].value)
            ):
                offenders.append(f"{module}:{node.lineno} {node.func.id} {node.args[1].value}")
    assert offenders == []


def test_every_tag_key_is_spelled_in_tags_py() -> None:
    """No tag key literal outside tracking_tasks/tags.py (docstrings aside)."""
    key = re.compile(
        r"^(tracking_tasks\.[a-z_]+\.?|prefect\.[a-z_]+|mlflow\.parentRunId|machine\.)$"
    )
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "tags.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and key.match(node.value)
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert offenders == []


def test_filters_are_built_in_one_place() -> None:
    """Filter clauses (tags.`...` = '...') are written by ops/_filters.py only (and the
    logged-model grammar's, by ops/_model_filters.py)."""
    clause = re.compile(r"""tags\.`|attributes\.status\s*=|name\s*=\s*'""")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("_filters.py", "_model_filters.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr | ast.Constant):
                text = ast.unparse(node) if isinstance(node, ast.JoinedStr) else str(node.value)
                if clause.search(text) and "Example" not in text and ">>>" not in text:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


#: Foreign exception types: catching one and raising one of ours turns it into the tree.
FOREIGN_ERRORS = re.compile(
    r"MlflowException|RestException|requests\.|urllib3\.|HTTPError|SSLError|ProxyError|"
    r"AzureError|HttpResponseError|ClientAuthenticationError|"
    r"ResourceNotFoundError"
)
#: Modules that translate a foreign library's errors of their own domain, with the reason.
TRANSLATES_ITS_OWN = {
    "tracking_tasks.azure_ml": "azure-core's errors of the one Azure call it makes",
}


def test_foreign_exceptions_are_translated_in_one_place() -> None:
    """Only errors.py catches a foreign exception to turn it into our tree (and the
    modules listed with their reason); others may catch one to look at it and re-raise
    it, or to translate inside an ``mlflow_errors`` block."""
    offenders = []
    for module, path in _modules():
        if module in ("tracking_tasks.errors", *TRANSLATES_ITS_OWN):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = ast.unparse(node.type)
                raises_ours = any(
                    isinstance(n, ast.Raise)
                    and isinstance(n.exc, ast.Call)
                    and isinstance(n.exc.func, ast.Name)
                    and n.exc.func.id.endswith("Error")
                    for n in ast.walk(node)
                )
                if FOREIGN_ERRORS.search(names) and raises_ours:
                    offenders.append(f"{module}:{node.lineno} except {names}")
    assert offenders == []
