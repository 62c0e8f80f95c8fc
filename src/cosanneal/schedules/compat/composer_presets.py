"""Presets reproducing composer schedules (being written)."""

__all__: list[str] = []
