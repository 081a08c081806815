"""Alert-service configuration: the shared settings, and what the stages derive from them."""

from __future__ import annotations

from pantau.settings import AlertSettings, Settings, get_settings

__all__ = ["AlertSettings", "Settings", "get_settings"]
