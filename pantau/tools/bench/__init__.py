"""Benchmarks run as commands (`pantau bench ...`), never as timed tests."""
