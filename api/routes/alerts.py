"""Alerts from the alert service: active and recent, acknowledgement, the CAP feed."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
