"""The plain layer: functions over MlflowClient, one capability a module, no Prefect.

Import the functions from their modules (``tracking_tasks.ops.runs``,
``tracking_tasks.ops.search``...): this package imports nothing, so using one
capability loads only what it needs.
"""
