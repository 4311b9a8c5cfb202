"""Artifacts, plain: upload, download, the manifest, archive mode and the transports.

Import from the modules: ``upload`` (``upload_artifacts``, ``log_best_checkpoint``),
``download`` (``download_artifacts``), ``manifest`` (the models), ``transport`` and
``http_transport`` (how bytes move), ``archive`` and ``fanout`` (their helpers).
"""
