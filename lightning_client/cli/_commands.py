"""Command classes behind the typer app: one-line usage errors (exit 2), boolean options shown as flags,
whole command summaries in help."""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup

from lightning_client.cli._common import ClickUsageError, usage_error_exit


def _flags_without_type(params: list[Any]) -> list[Any]:
    """Boolean flags take no value, so help shows `--sandbox`, not `--sandbox <bool>`."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Group(TyperGroup):
    """A command group: usage errors (its own and its commands') are one line with exit 2; flags show as flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_type(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _flags_without_type(command.get_params(ctx))
        return command

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Each command with its first help sentence in full, wrapped (click cuts it to the width with '...')."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except ClickUsageError as exc:
            usage_error_exit(exc)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ClickUsageError as exc:
            usage_error_exit(exc)
