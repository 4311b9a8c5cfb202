"""The documentation site: it builds with --strict, and its Python examples run as written.

Convention for the ```python blocks of docs/**/*.md: a page's blocks run in order in one
namespace (like a doctest session), in a fresh temporary working directory, with
``MLFLOW_TRACKING_URI`` pointing at the session's real MLflow server (the one backed by
PostgreSQL for the pages in POSTGRES_PAGES, a ``slow`` test then; the one started with
``--enable-workspaces``, holding workspaces ``team-a`` and ``team-b``, for the pages in
WORKSPACE_PAGES) and
``MLFLOW_EXPERIMENT_NAME`` unset, under the suite's real Prefect API. A block whose first
line is ``# not executed: <reason>`` (an example that needs Azure or another outside
service) is only compiled. Each page with Python blocks is one test, with the page's
path as its id.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import MlflowServer

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_DIR = REPO_ROOT / "docs"
NOT_EXECUTED = "# not executed:"

# A fenced ```python block (``` or longer, optionally indented, as inside an admonition
# or a tab); extra words after "python" (a title="...") are allowed.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,})[ \t]*python\b[^\n]*\n"
    r"(?P<body>.*?)"
    r"^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)


@dataclass(frozen=True)
class CodeBlock:
    """One ```python block of a docs page."""

    page: str  # path relative to the repository root, such as "docs/getting-started.md"
    line: int  # 1-based line of the block's first code line in the page
    source: str  # dedented code

    @property
    def executed(self) -> bool:
        return not self.source.lstrip().startswith(NOT_EXECUTED)

    def compile(self) -> object:
        """Compile with the page's own line numbers, so tracebacks point into the page."""
        padded = "\n" * (self.line - 1) + self.source
        return compile(padded, str(REPO_ROOT / self.page), "exec", dont_inherit=True)


def python_blocks(text: str, page: str) -> list[CodeBlock]:
    """Every ```python block of one markdown text, in order."""
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start("body")) + 1
        blocks.append(CodeBlock(page, line, textwrap.dedent(match.group("body"))))
    return blocks


def docs_pages() -> dict[str, list[CodeBlock]]:
    """Pages with at least one ```python block, keyed by path relative to the repo."""
    pages = {}
    for path in sorted(DOCS_DIR.rglob("*.md")):
        page = path.relative_to(REPO_ROOT).as_posix()
        blocks = python_blocks(path.read_text(encoding="utf-8"), page)
        if blocks:
            pages[page] = blocks
    return pages


PAGES = docs_pages()


def test_collects_python_blocks() -> None:
    text = textwrap.dedent(
        """\
        # Page

        ```python
        a = 1
        ```

        ```bash
        echo not python
        ```

        !!! note

            ```python title="indented.py"
            if a:
                b = 2
            ```

        ````python
        # not executed: needs a workspace
        text = '''
        ```
        '''
        ````
        """
    )
    blocks = python_blocks(text, "docs/page.md")
    assert [b.source for b in blocks] == [
        "a = 1\n",
        "if a:\n    b = 2\n",
        "# not executed: needs a workspace\ntext = '''\n```\n'''\n",
    ]
    assert [b.line for b in blocks] == [4, 14, 19]
    assert [b.executed for b in blocks] == [True, True, False]
    assert python_blocks("no code here\n", "docs/empty.md") == []


def test_getting_started_has_a_quick_start() -> None:
    """The machinery below is exercised: the getting-started page has runnable code."""
    blocks = PAGES.get("docs/getting-started.md", [])
    assert any(b.executed and "config_hash" in b.source for b in blocks)


#: Guides that are prose and figures only (their numbers come from `make bench`).
GUIDES_WITHOUT_CODE = frozenset(
    # figures and a table of tests, each checked by test_guarantees_name_tests_that_exist
    {"docs/guides/performance.md", "docs/guides/guarantees.md"}
)


def test_guarantees_name_tests_that_exist() -> None:
    """Every test the guarantees page names is a test function of that file (``::name``
    alone means the file named last)."""
    import ast
    import re

    text = (DOCS_DIR / "guides" / "guarantees.md").read_text(encoding="utf-8")
    named: list[tuple[str, str]] = []
    current = ""
    for path, name in re.findall(r"`(tests/[\w/]+\.py)?::(test_\w+)`", text):
        current = path or current
        named.append((current, name))
    assert len(named) >= 25, named
    missing = []
    for path, name in named:
        tree = ast.parse((REPO_ROOT / path).read_text(encoding="utf-8"))
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        if name not in defined:
            missing.append(f"{path}::{name}")
    assert not missing, f"the guarantees page names tests that do not exist: {missing}"


def test_every_guide_runs_an_example() -> None:
    """A guide shows each capability at work: at least one of its examples is executed."""
    guides = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (DOCS_DIR / "guides").glob("*.md"))
    without = [
        guide
        for guide in guides
        if guide not in GUIDES_WITHOUT_CODE and not any(b.executed for b in PAGES.get(guide, []))
    ]
    assert guides and not without, f"guides with no executed example: {without}"


#: Pages whose examples run against the `mlflow server` backed by PostgreSQL.
POSTGRES_PAGES = frozenset({"docs/guides/postgres.md"})
#: Pages whose examples run against `mlflow server --enable-workspaces`.
WORKSPACE_PAGES = frozenset({"docs/guides/shared-server.md"})


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(page, marks=pytest.mark.slow) if page in POSTGRES_PAGES else page
        for page in sorted(PAGES)
    ],
)
def test_docs_examples_run(
    page: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fluent_reset: None,
) -> None:
    backend = "postgres" if page in POSTGRES_PAGES else "sqlite"
    if page in WORKSPACE_PAGES:
        backend = "workspace"
    mlflow_server: MlflowServer = request.getfixturevalue(f"{backend}_mlflow_server")
    blocks = PAGES[page]
    # every block compiles, the ones that are not run included
    code = [block.compile() for block in blocks]
    for block in blocks:
        if not block.executed:
            reason = block.source.lstrip()[len(NOT_EXECUTED) :].split("\n", 1)[0].strip()
            assert reason, f"{page}:{block.line}: '{NOT_EXECUTED}' must say why"

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block, compiled in zip(blocks, code, strict=True):
        if block.executed:
            exec(compiled, namespace)


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """The site builds as `make docs` builds it (a subprocess, a few seconds).

    --strict: a broken link or anchor, an unresolved reference or a docstring warning
    fails the build (and this test, with mkdocs' output in the message).
    """
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "reference" / "hashing" / "index.html").is_file()
    changelog = (tmp_path / "changelog" / "index.html").read_text(encoding="utf-8")
    assert "Unreleased" in changelog and "0.1.0" in changelog  # CHANGELOG.md included
