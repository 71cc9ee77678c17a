"""`--help` presentation: flags show no ``<bool>`` type placeholder (typer prints one for every option)."""

from __future__ import annotations

from typing import Any


def hide_flag_placeholders() -> None:
    """Make typer's rich help print no type for flags (``--json``, ``--prune/--no-prune``, ``--help``)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_vtr_flags_hidden", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._vtr_flags_hidden = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
