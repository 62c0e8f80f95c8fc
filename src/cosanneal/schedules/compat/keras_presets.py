"""Presets reproducing keras schedules (being written)."""

__all__: list[str] = []
