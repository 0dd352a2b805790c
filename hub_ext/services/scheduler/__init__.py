"""Notebook jobs: papermill runs on cron, file, webhook and after-job triggers, stored to survive restarts."""
