"""Benchmarks: each module prints throughput or ratios."""
