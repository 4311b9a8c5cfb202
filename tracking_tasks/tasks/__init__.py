"""The Prefect layer: tasks, state hooks, cache policies and the credentials Block.

Each task wraps one plain function of ``tracking_tasks.ops`` and declares the Prefect
behaviour (caching, retries, hooks) on its decorator. Import from the modules.
"""
