"""Pantau: the shared core of the platform (settings, catalogue, payloads, database, CLI)."""

__version__ = "0.1.0"
