"""Benchmarks: scripts that measure, print and exit (``make bench``); not tests."""
