"""Tooling for developers: the local stack (`pantau up`) and the benchmarks (`pantau bench`).

Installed with the `tools` extra (`pip install pantau[tools]`); the production image leaves it
out, and no module of the shared core or of a service imports it.
"""
