"""Presets reproducing torch schedules (being written)."""

__all__: list[str] = []
