"""Presets reproducing timm schedules (being written)."""

__all__: list[str] = []
