"""Presets reproducing optax schedules (being written)."""

__all__: list[str] = []
