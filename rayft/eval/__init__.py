"""Evaluation utilities for rayft: text metrics, generation tagging and related helpers."""
