"""`python -m ingest`: the ingest service (same as `pantau ingest`)."""

from ingest.cli import main

main()
