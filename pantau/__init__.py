"""Pantau: the shared core of the platform (settings, catalogue, payloads, database, MQTT);
the `pantau` command line in pantau.cli, the developer tools in pantau.tools."""

__version__ = "0.1.0"
