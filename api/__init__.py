"""The open-data and operator API (FastAPI)."""
