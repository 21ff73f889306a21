"""Benchmarks: `python -m bench` prints figures and ratios measured side by side in one run."""
