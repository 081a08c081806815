"""Ingest service: MQTT (v5, QoS 1, persistent session) into the readings table, in batches.

A message is acknowledged only once its readings, or its rejection record, are committed (or
durably spooled during a database outage), so nothing is lost, duplicated or stalled. Run it
with ``pantau ingest`` or ``python -m ingest``; see docs/ingest.md.
"""
