"""Ray Train launch of pipeline stages (driver: launch.py; workers: worker.py)."""
