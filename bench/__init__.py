"""Measurement scripts; run each as `.venv/bin/python bench/NAME.py` (see bench/RESULTS.md)."""
