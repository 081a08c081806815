"""The live city page and the control page."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
