"""The command line's text: run tables and details, the reconcile summary, JSON, and the
library's hints in the command line's terms; every server-provided string is escaped."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

#: What a terminal would act on instead of showing: C0 controls (ESC, BEL, CR, LF...),
#: DEL, C1 controls (CSI, OSC...), and the bidirectional overrides that reorder a line.
_CONTROL = [*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES = {code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _CONTROL}


def printable(text: Any) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``), not obeyed.

    Names, tags and messages come from the tracking server: a run named
    ``"\\x1b]0;...\\x07"`` must not retitle the terminal, move the cursor or hide a line.
    Every table and detail line goes through here; JSON output escapes them itself.
    """
    return str(text).translate(_ESCAPES)


def _short_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _metrics_cell(metrics: dict[str, float], width: int = 48) -> str:
    text = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
    return text if len(text) <= width else text[: width - 3] + "..."


def runs_table(runs: Sequence[Any]) -> str:
    header = ("RUN ID", "NAME", "STATUS", "STARTED (UTC)", "METRICS")
    rows = [
        tuple(
            printable(cell)
            for cell in (
                r.run_id, r.run_name, r.status, _short_time(r.start_time), _metrics_cell(r.metrics)
            )
        )
        for r in runs
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def run_details(run: Any) -> str:
    lines = [
        f"run id:      {run.run_id}",
        f"name:        {run.run_name}",
        f"status:      {run.status}" + (" (deleted)" if run.lifecycle_stage == "deleted" else ""),
        f"experiment:  {run.experiment_id}"
        + (f" (workspace {run.workspace})" if run.workspace else ""),
        f"started:     {_short_time(run.start_time)} UTC",
        f"ended:       {_short_time(run.end_time)}" + (" UTC" if run.end_time else ""),
    ]
    if run.parent_run_id:
        lines.append(f"parent run:  {run.parent_run_id}")
    lines.append(f"link:        {run.url or '- (local store: open it with mlflow ui)'}")
    for title, values in (("params", run.params), ("metrics", run.metrics), ("tags", run.tags)):
        lines.append(f"{title}:" + ("" if values else " -"))
        lines.extend(f"  {key} = {values[key]}" for key in sorted(values))
    return "\n".join(printable(line) for line in lines)


def as_json(value: Any) -> str:
    if isinstance(value, list):
        return json.dumps([v.model_dump(mode="json") for v in value], indent=2)
    return json.dumps(value.model_dump(mode="json"), indent=2)


def reconcile_table(report: Any, grace_seconds: float) -> str:
    verb = "would end" if report.dry_run else "ended"
    workspace = f" (workspace {report.workspace})" if report.workspace else ""
    lines = [
        f"{report.running} RUNNING run(s) on {report.tracking_uri}{workspace}; "
        f"{report.flow_runs} Prefect flow run(s) of this Prefect API ({report.prefect_api}) "
        f"looked up; {verb} {len(report.ended)}"
    ]
    missing = set(report.flow_run_missing)
    for status, run_ids in (
        ("FINISHED", report.finished),
        ("FAILED", report.failed),
        ("KILLED", report.killed),
    ):
        lines += [
            f"  {verb} {run_id} {status}" + (" (flow run not found)" if run_id in missing else "")
            for run_id in run_ids
        ]
    lines.append(f"  left running (flow run not over): {len(report.left_running)}")
    lines.append(
        f"  recently active (written to within {grace_seconds:g} s): {len(report.recently_active)}"
    )
    lines.append(f"  changed since read (left for the next pass): {len(report.changed)}")
    lines.append(f"  not ours (another Prefect API, or no prefect.api tag): {len(report.not_ours)}")
    lines += [f"  not ours: {run_id}" for run_id in report.not_ours]
    lines += [f"  error: {message}" for message in report.errors]
    return "\n".join(printable(line) for line in lines)


#: The library's hints, said in the command line's terms (Python's argument names and
#: functions become the flags that set them).
_CLI_TERMS = (
    (
        "check the name (setup_mlflow creates it), the tracking URI and the workspace",
        "check -e/--experiment (a flow's setup_mlflow creates it), --tracking-uri and --workspace",
    ),
    ("that the tracking URI is right", "that --tracking-uri (else $MLFLOW_TRACKING_URI) is right"),
    ("the host in the tracking URI", "the host in --tracking-uri (else $MLFLOW_TRACKING_URI)"),
    (
        "check the run id, the tracking URI and the workspace",
        "check the run id, --tracking-uri and --workspace",
    ),
    ("(from the tracking_uri argument)", "(from --tracking-uri)"),
    ("tracking_uri '", "--tracking-uri '"),
    ("max_results ", "--max-results "),
)


def in_cli_terms(message: str) -> str:
    """Say a library error's hint in the command line's terms (flags, not arguments).

    Args:
        message: The error's message.

    Returns:
        The message, its hints naming the command line's flags.

    Example:
        >>> in_cli_terms("... check the run id, the tracking URI and the workspace")
        '... check the run id, --tracking-uri and --workspace'
    """
    for python, cli in _CLI_TERMS:
        message = message.replace(python, cli)
    return message
