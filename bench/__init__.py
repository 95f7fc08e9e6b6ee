"""Benchmarks: each prints the figures it measures as ratios taken in one run."""
