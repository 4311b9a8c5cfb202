"""Every ``>>>`` example in the library's docstrings runs, as written, against real servers.

One test per module. The examples run in a fresh working directory with
``MLFLOW_TRACKING_URI`` pointing at the session's `mlflow server`, under the suite's
Prefect API, and see these names besides their module's own:

- ``ctx``: a ``TrackingContext`` of the experiment ``doctests`` on that server;
- ``run``: a fresh RUNNING run in it (a ``RunRef``), made for each module;
- ``flow_run_id``: the id of a finished Prefect flow run that opened a run there;
- ``getfixture``: pytest's fixture lookup (``getfixture("monkeypatch")``, undone after).

An example is never skipped: ``# doctest: +SKIP`` is refused, so an example that cannot
run here is rewritten until it does, or removed.
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

import tracking_tasks
from tests.servers import MlflowServer
from tracking_tasks.handles import RunRef, TrackingContext

PACKAGE = Path(tracking_tasks.__file__).resolve().parent
MODULES = sorted(
    ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.fixture(scope="module")
def doctest_flow_run(sqlite_mlflow_server: MlflowServer) -> tuple[TrackingContext, str]:
    """A context on the session server, and a finished flow run that opened a run there."""
    from prefect import flow
    from prefect.runtime import flow_run

    from tests.conftest import _fluent_state, _restore_fluent_state
    from tracking_tasks import create_mlflow_run, mlflow_state_hooks
    from tracking_tasks.ops import setup_mlflow

    env, _ = _fluent_state()
    ctx = setup_mlflow(experiment_name="doctests", tracking_uri=sqlite_mlflow_server.url)
    _restore_fluent_state(env)  # setup points MLflow's fluent API: not for the module

    @flow(**mlflow_state_hooks())
    def opens_a_run() -> str:
        create_mlflow_run(ctx, run_name="doctest-flow-run")
        return str(flow_run.id)

    return ctx, opens_a_run()


def test_no_example_is_skipped() -> None:
    skipped = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "doctest: +SKIP" in line
    ]
    assert skipped == []


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(
    module: str,
    doctest_flow_run: tuple[TrackingContext, str],
    sqlite_mlflow_server: MlflowServer,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fluent_reset: None,
) -> None:
    from tracking_tasks.ops import create_mlflow_run, end_mlflow_run

    loaded = importlib.import_module(module)
    tests = [
        test
        for test in doctest.DocTestFinder(exclude_empty=True).find(loaded, module)
        if test.examples
    ]
    if not tests:
        pytest.skip(f"{module} has no examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_mlflow_server.url)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    ctx, flow_run_id = doctest_flow_run
    run: RunRef = create_mlflow_run(ctx, run_name=f"doctest {module}")
    names = {"ctx": ctx, "run": run, "flow_run_id": flow_run_id}
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    try:
        for test in tests:
            test.globs = {**vars(loaded), **names, "getfixture": request.getfixturevalue}
            runner.run(test, out=report.write)
    finally:
        end_mlflow_run(run)
    assert runner.failures == 0, report.getvalue()
