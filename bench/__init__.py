"""Benchmarks of tracking_tasks against raw MLflow doing the same work."""
