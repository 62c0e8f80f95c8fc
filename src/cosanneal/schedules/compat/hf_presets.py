"""Presets reproducing hf schedules (being written)."""

__all__: list[str] = []
