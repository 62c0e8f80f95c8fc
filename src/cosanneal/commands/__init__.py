"""Subcommands that live outside :mod:`cosanneal.cli`.

Every module in this package defines ``register(app: typer.Typer) -> None``; :mod:`cosanneal.cli` imports
each one (sorted by name) and lets it add its commands, so features land without editing the CLI module.
Heavy imports belong inside the command functions, not at module level.
"""
