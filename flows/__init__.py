"""Real flows built from tracking_tasks; prefect.yaml deploys them."""
