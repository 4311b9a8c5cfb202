"""The layout holds: layers, no import cycles, one home per rule, a public card."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracking_tasks

PACKAGE = Path(tracking_tasks.__file__).resolve().parent
REPO = PACKAGE.parent
#: Modules that must never import Prefect (the plain layer and what it stands on).
PLAIN = ("ops", "config", "errors", "handles", "tags", "hashing", "urls", "_version")
MAX_LINES = 420


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


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


def _is_plain(module: str) -> bool:
    return module.split(".")[1] in PLAIN if module.count(".") else False


@pytest.mark.parametrize("module", [m for m, _ in _modules() if _is_plain(m)])
def test_the_plain_layer_never_imports_prefect_or_the_layers_above(module: str) -> None:
    path = dict(_modules())[module]
    bad = sorted(
        name
        for name in _imports(path)
        if name.split(".")[0] == "prefect"
        or name.startswith(("tracking_tasks.tasks", "tracking_tasks.trackers"))
        or name == "tracking_tasks"
    )
    assert bad == [], f"{module} imports {bad}"


def test_the_prefect_layer_never_imports_the_trackers() -> None:
    for module, path in _modules():
        if module.startswith("tracking_tasks.tasks"):
            assert not any(n.startswith("tracking_tasks.trackers") for n in _imports(path)), module


def test_no_module_imports_one_that_imports_it_back() -> None:
    modules = dict(_modules())
    graph = {
        module: {
            name
            for name in _imports(path)
            if name in modules and name != module and name != "tracking_tasks"
        }
        for module, path in modules.items()
        if module != "tracking_tasks"  # the card imports everything and nothing imports it
    }
    # a package imports its own submodules to re-export them; a submodule importing its
    # package's names goes through the package: that pair is not a cycle of logic
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
    assert cycles == []


def test_no_module_is_over_the_limit_without_a_reason() -> None:
    long = []
    for module, path in _modules():
        text = path.read_text()
        lines = text.count("\n")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and "Over 400 lines" not in docstring:
            long.append(f"{module}: {lines} lines")
    assert long == []


def test_the_library_and_flows_never_call_fn_on_their_tasks() -> None:
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "flows").glob("*.py")]:
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
        if writes.search(path.read_text()) and path.name != "environment.py"
    ]
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
    """Filter clauses (tags.`...` = '...') are written by ops/filters.py only."""
    clause = re.compile(r"""tags\.`|attributes\.status\s*=|name\s*=\s*'""")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "filters.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr | ast.Constant):
                text = ast.unparse(node) if isinstance(node, ast.JoinedStr) else str(node.value)
                if clause.search(text) and "Example" not in text and ">>>" not in text:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_mlflow_exceptions_are_translated_in_one_place() -> None:
    """Only errors.py catches MlflowException to turn it into our tree; others may catch
    it to look at its code and re-raise, inside an ``mlflow_errors`` block."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = ast.unparse(node.type)
                raises_ours = any(
                    isinstance(n, ast.Raise) and n.exc is not None for n in ast.walk(node)
                )
                if "MlflowException" in names and raises_ours:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_the_public_card_is_short_and_documented() -> None:
    names = [n for n in tracking_tasks.__all__ if n != "__version__"]
    assert len(names) <= 42, f"{len(names)} names on the card"
    for name in names:
        obj = getattr(tracking_tasks, name)
        doc = getattr(obj, "__doc__", None) or ""
        assert doc.strip(), f"tracking_tasks.{name} has no docstring"
        if callable(obj) and not isinstance(obj, type):
            assert "Example" in doc and ("Returns" in doc or "Args" in doc), name


def test_every_module_has_a_page_in_the_api_reference() -> None:
    directives = set()
    for page in (REPO / "docs" / "reference").rglob("*.md"):
        directives |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.M))
    # a package's page covers the submodules whose names it re-exports
    missing = sorted(
        module
        for module, _ in _modules()
        if not module.rsplit(".", 1)[-1].startswith("_")
        and not any(
            module == d or (d != "tracking_tasks" and module.startswith(f"{d}."))
            for d in directives
        )
    )
    assert missing == []
