"""OGC SensorThings API v1.1, read-only subset, under /sta/v1.1."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
