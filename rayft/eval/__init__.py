"""Evaluation drivers: base vs tuned on held-out rows (compare.py) and the run's reports (terminal,
report.md, report.html)."""
