"""The logger to use: Prefect's run logger inside a run, the library logger outside."""

from __future__ import annotations

import logging
from typing import Any

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging import get_logger, get_run_logger


def logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """Return Prefect's run logger when called inside a flow or task run, else ours."""
    if TaskRunContext.get() is not None or FlowRunContext.get() is not None:
        return get_run_logger()
    return get_logger("tracking_tasks")
