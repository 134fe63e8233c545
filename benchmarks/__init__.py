"""Benchmarks of alae_fast, run with pytest-benchmark (see benchmarks/results/README.md)."""
