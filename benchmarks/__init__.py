"""Benchmarks: one harness (harness.py), one script per kernel or scenario, run as `python -m benchmarks.<script>`;
committed results from real GPU runs in results/."""
