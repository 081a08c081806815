"""Live stream of new readings and alert changes (Server-Sent Events)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
