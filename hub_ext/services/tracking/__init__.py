"""Experiment tracking: a managed MLflow server behind the hub's login (``/services/tracking/``)."""
