"""Operator routes (API key): the registry, thresholds, rejected payloads."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
