"""Benchmarks: each prints its figures as a ratio to a bare baseline measured in the same run."""
