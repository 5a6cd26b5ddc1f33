"""How a setting is declared once: a pydantic field with its default, type, bounds, help and, where the
command line spells it otherwise than `--<field-name>`, its option (flows/cli.py derives every option from this)."""

from __future__ import annotations

from pydantic import Field


def option(name: str | None, description: str | None = None, **field) -> object:
    """A field whose command-line option is `name` (None: no option) instead of `--<field-name>`."""
    return Field(description=description, json_schema_extra={"option": name}, **field)
