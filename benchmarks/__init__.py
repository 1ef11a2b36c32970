"""Benchmarks of dsv against git and Oxen (see docs/performance.md)."""
