"""The commands of the ``cosanneal`` CLI, one module per command.

Every command module defines ``register(app: typer.Typer) -> None``; :mod:`cosanneal.cli` imports them
by name and registers them in the order of :data:`cosanneal.cli.COMMANDS`. Command modules do not
import each other; what they share is in :mod:`~cosanneal.commands.options` (one spelling per option),
:mod:`~cosanneal.commands.schedules_input` (a spec or a training config, bound),
:mod:`~cosanneal.commands.schedule_table` and :mod:`~cosanneal.commands.run_output`. Heavy imports
belong inside the command functions, not at module level.
"""
