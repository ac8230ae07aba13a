"""Benchmark suite (``autolr bench``): tasks, methods, metrics and reports."""
