"""Configs from mappings, TOML/JSON files and ``SMOOTHAPI_*`` environment variables."""

from __future__ import annotations

__all__: list[str] = []
