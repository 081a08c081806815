"""The API's settings: the shared settings object, its `api` group in particular."""

from pantau.settings import ApiSettings, Settings, get_settings

__all__ = ["ApiSettings", "Settings", "get_settings"]
