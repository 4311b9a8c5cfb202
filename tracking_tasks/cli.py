"""The ``tracking-tasks`` console script: find, rank and show MLflow runs from a shell."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from tracking_tasks._cli_text import (
    as_json,
    in_cli_terms,
    printable,
    reconcile_table,
    run_details,
    runs_table,
)

__all__ = ["main"]

EXIT_OK = 0
EXIT_NOTHING_FOUND = 1
EXIT_USAGE = 2
EXIT_SERVER = 3

_DESCRIPTION = """\
Find MLflow runs from the shell, with the same checks as the tracking_tasks finders:
a malformed filter or an unknown experiment is a one-line error (exit code 2) raised
before any run is searched.

The tracking URI is --tracking-uri, else the tracking URI of the --credentials block,
else $MLFLOW_TRACKING_URI, else the embedded default (sqlite:///mlflow.db in the working
directory); the experiment is -e/--experiment, else $MLFLOW_EXPERIMENT_NAME, else
"Default"; the MLflow workspace is --workspace, else the block's, else $MLFLOW_WORKSPACE,
else the server's default. No Prefect server is needed, except to read a --credentials
block and for `runs reconcile` (it reads flow-run states from this process's Prefect
API: PREFECT_API_URL, a profile, or the temporary API on PREFECT_HOME).
"""

_EPILOG = """\
examples:
  tracking-tasks runs find -e ner --filter "tags.stage = 'hpo' AND metrics.f1 > 0.8"
  tracking-tasks runs find -e ner --order-by "metrics.f1 DESC" --max-results 5 --format json
  tracking-tasks runs best f1 -e ner --filter "tags.stage = 'hpo'"
  tracking-tasks runs best loss --mode min -e ner
  tracking-tasks runs show 800cabaf0fee4093b26abc644953ed53
  tracking-tasks runs reconcile --dry-run -e ner
  tracking-tasks runs find -e ner --workspace team-a

exit codes: 0 success, 1 no run matched (runs best), 2 bad input or unknown experiment/run,
3 the tracking server failed or could not be reached.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like our own user errors
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _common(parser: argparse.ArgumentParser, *, experiments: bool = True) -> None:
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument(
        "--credentials",
        metavar="BLOCK",
        help="name of a saved MlflowCredentials block (read from the Prefect API): its "
        "secret goes to its own tracking server only, and its tracking URI is the default",
    )
    parser.add_argument(
        "--workspace",
        metavar="NAME",
        help="MLflow workspace on a server with --enable-workspaces (default: the "
        "--credentials block's, else $MLFLOW_WORKSPACE, else the server's default)",
    )
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )
    if not experiments:
        return
    parser.add_argument(
        "-e",
        "--experiment",
        action="append",
        metavar="NAME",
        dest="experiments",
        help="experiment name; repeat for several (default: $MLFLOW_EXPERIMENT_NAME, else Default)",
    )
    parser.add_argument(
        "--filter",
        default="",
        metavar="FILTER",
        help="MLflow filter string, e.g. \"tags.stage = 'hpo' AND metrics.f1 > 0.8\"",
    )
    parser.add_argument(
        "--status",
        type=str.upper,
        choices=("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"),
        help="only runs in this status",
    )
    parser.add_argument("--include-deleted", action="store_true", help="also consider deleted runs")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``tracking-tasks`` (also used for ``--help``)."""
    parser = _Parser(
        prog="tracking-tasks",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    runs = groups.add_parser(
        "runs",
        help="find, rank and show MLflow runs",
        description="Find, rank and show MLflow runs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = runs.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    find = commands.add_parser(
        "find",
        help="list runs matching a filter (all pages)",
        description="List the runs matching a filter, following MLflow's pages to the end.",
    )
    _common(find)
    find.add_argument(
        "--order-by",
        action="append",
        metavar="CLAUSE",
        help='MLflow order-by clause, e.g. "metrics.f1 DESC"; repeat for several',
    )
    find.add_argument("--max-results", type=int, metavar="N", help="at most N runs (default: all)")

    best = commands.add_parser(
        "best",
        help="the run with the best value of a metric",
        description=(
            "Print the run with the highest (or lowest) value of METRIC. Runs without it "
            "are ignored; ties go to the run that started first, then the smallest run id. "
            "Only FINISHED runs count unless --status or --any-status says otherwise. "
            "Exit code 1 when no run has the metric."
        ),
    )
    best.add_argument("metric", help="metric name, e.g. f1")
    best.add_argument("--mode", choices=("max", "min"), default="max", help="max (default) or min")
    _common(best)
    best.add_argument("--any-status", action="store_true", help="consider runs in any status")

    show = commands.add_parser(
        "show",
        help="one run by id: params, metrics, tags, link",
        description="Show one run: status, times, params, metrics, tags and its UI link.",
    )
    show.add_argument("run_id", help="MLflow run id")
    _common(show, experiments=False)

    reconcile = commands.add_parser(
        "reconcile",
        help="end runs left RUNNING whose Prefect flow run is over",
        description=(
            "End the RUNNING runs opened under a Prefect flow run that is over (Completed "
            "-> FINISHED, Failed/Crashed -> FAILED, Cancelled -> KILLED) or gone (FAILED), "
            "as the flow's hooks would have if its process had not died. Only runs of this "
            "process's Prefect API (their prefect.api tag) are ours: runs of other APIs, or "
            "without the tag, are listed as 'not ours' and never touched; so are runs of "
            "flow runs still going, runs written to within the grace period, and runs that "
            "changed while the pass ran. The Prefect API is PREFECT_API_URL (or a profile), "
            "else the temporary API on PREFECT_HOME. Searches every experiment (of the "
            "workspace) unless -e names some."
        ),
    )
    _common(reconcile, experiments=False)
    reconcile.add_argument(
        "-e",
        "--experiment",
        action="append",
        metavar="NAME",
        dest="experiments",
        help="experiment name; repeat for several (default: every active experiment)",
    )
    reconcile.add_argument(
        "--dry-run", action="store_true", help="print what would be ended; change nothing"
    )
    reconcile.add_argument(
        "--grace-seconds",
        type=float,
        default=None,
        metavar="S",
        help="end only runs not written to for S seconds (default: 300)",
    )
    return parser


def _use_block(args: argparse.Namespace) -> None:
    """Scope a saved block's credential to its server; default the tracking URI (and the
    workspace) to its."""
    if args.credentials:
        from tracking_tasks.auth._block import load_block, use_block

        block = load_block(args.credentials)
        args.tracking_uri = use_block(block, args.tracking_uri)
        args.workspace = args.workspace or block.workspace


def _run(args: argparse.Namespace) -> int:
    from tracking_tasks.ops._finders import find_best_run, find_mlflow_runs, get_run_summary

    _use_block(args)

    if args.command == "reconcile":
        from tracking_tasks.ops._reconcile import reconcile_runs
        from tracking_tasks.ops._reconcile_guard import DEFAULT_GRACE_SECONDS
        from tracking_tasks.tasks._prefect_api import prefect_api_identity
        from tracking_tasks.tasks._reconcile import read_flow_run_states

        grace = DEFAULT_GRACE_SECONDS if args.grace_seconds is None else args.grace_seconds
        report = reconcile_runs(
            read_flow_run_states,
            args.experiments,
            prefect_api=prefect_api_identity,  # asked once the tracking server answers
            tracking_uri=args.tracking_uri,
            workspace=args.workspace,
            dry_run=args.dry_run,
            grace_seconds=grace,
        )
        print(as_json(report) if args.format == "json" else reconcile_table(report, grace))
        return EXIT_SERVER if report.errors else EXIT_OK

    if args.command == "find":
        runs = find_mlflow_runs(
            args.experiments,
            args.filter,
            tracking_uri=args.tracking_uri,
            order_by=args.order_by,
            status=args.status,
            max_results=args.max_results,
            include_deleted=args.include_deleted,
            workspace=args.workspace,
        )
        if args.format == "json":
            print(as_json(runs))
        else:
            print(runs_table(runs) if runs else "no runs matched")
        return EXIT_OK
    if args.command == "best":
        status: Any = None if args.any_status else (args.status or "FINISHED")
        found = find_best_run(
            args.metric,
            args.experiments,
            mode=args.mode,
            filter_string=args.filter,
            status=status,
            include_deleted=args.include_deleted,
            tracking_uri=args.tracking_uri,
            workspace=args.workspace,
        )
        if found is None:
            message = f"no {status or ''} run has metric {args.metric!r}".replace("  ", " ")
            message += _metric_hint(args)
            if args.format == "json":
                print("null")
            print(printable(message), file=sys.stderr)
            return EXIT_NOTHING_FOUND
        print(as_json(found) if args.format == "json" else run_details(found))
        return EXIT_OK
    run = get_run_summary(args.run_id, tracking_uri=args.tracking_uri, workspace=args.workspace)
    print(as_json(run) if args.format == "json" else run_details(run))
    return EXIT_OK


def _metric_hint(args: argparse.Namespace) -> str:
    """What ``runs best`` says when no run has the metric: a close name, or the names."""
    import difflib

    from tracking_tasks.ops._finders import find_mlflow_runs

    runs = find_mlflow_runs(
        args.experiments,
        tracking_uri=args.tracking_uri,
        include_deleted=args.include_deleted,
        max_results=_HINT_RUNS,
    )
    names = sorted({name for run in runs for name in run.metrics})
    if args.metric in names:
        return "; runs in other statuses have it (--any-status, or --status)"
    close = difflib.get_close_matches(args.metric, names, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    if names:
        shown = ", ".join(names[:_HINT_NAMES]) + (", ..." if len(names) > _HINT_NAMES else "")
        return f" (the runs' metrics: {shown})"
    return ""


#: Runs read, and metric names shown, for the hint of ``runs best``.
_HINT_RUNS = 1000
_HINT_NAMES = 12


def _fail(exc: BaseException) -> None:
    print(
        "tracking-tasks: error: " + printable(in_cli_terms(" ".join(str(exc).split()))),
        file=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tracking-tasks`` command line; return its exit code.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when ``runs best`` finds no run, 2 for bad input (a malformed
        filter, an unknown experiment or run id, an invalid tracking URI), 3 when the
        tracking server fails or cannot be reached.

    Example:
        >>> main(["runs", "find", "-e", "doctests", "--filter", "metrics.f1 >"])
        2
    """
    args = build_parser().parse_args(argv)
    # results go to stdout, errors to one line on stderr: the library's own info lines
    # (forwarded to Prefect's console logger) would only interleave with them. Restored
    # on the way out: main() called in a process that goes on keeps its logging.
    library_log = logging.getLogger("tracking_tasks")
    level = library_log.level
    library_log.setLevel(logging.WARNING)

    from tracking_tasks.errors import InvalidArgumentError, NotFoundError, TrackingTasksError

    try:
        return _run(args)
    except (InvalidArgumentError, NotFoundError) as exc:
        _fail(exc)
        return EXIT_USAGE
    except TrackingTasksError as exc:
        _fail(exc)
        return EXIT_SERVER
    except KeyboardInterrupt:
        return 130
    finally:
        library_log.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
