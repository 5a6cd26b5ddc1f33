"""How a setting is declared once: a pydantic field with its default, type, bounds, help and, where the
command line spells it otherwise than `--<field-name>`, its option (flows/cli.py derives every option from this).

`Config` is the one way a core config round-trips through plain dicts (checkpoints, config.json, Prefect
parameters): `as_dict` gives JSON values (tuples as lists), `from_dict` validates them back (lists as tuples);
a key the config does not know is refused. No config writes its own pair."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator
from pydantic.fields import FieldInfo


def option(name: str | None, description: str | None = None, **field) -> Any:
    """A field whose command-line option is `name` (None: no option) instead of `--<field-name>`."""
    return Field(description=description, json_schema_extra={"option": name}, **field)


def nested(config: type[BaseModel], *exposed: str, description: str | None = None) -> Any:
    """A field holding a whole sub-config (default: its defaults) whose `exposed` fields are settings of the outer
    config too: given by name to it (`TrainConfig(prediction="v")`) and options `--<sub-field-name>`, declared
    only in the sub-config (e.g. the diffusion settings training exposes)."""
    return Field(default_factory=config, description=description,
                 json_schema_extra={"option": None, "exposed": list(exposed)})


def exposed_fields(model: type[BaseModel]) -> dict[str, tuple[str, FieldInfo]]:
    """The sub-config fields `model` exposes: name -> (the field holding the sub-config, the sub-field's declaration)."""
    found = {}
    for holder, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        for name in extra.get("exposed", ()):
            found[name] = (holder, info.annotation.model_fields[name])
    return found


class Config(BaseModel):
    """A typed core config: validated on construction, unknown keys refused, round-trips through dicts."""

    model_config = ConfigDict(extra="forbid")
    # fields added after files holding this config were written (checkpoints, config.json): left out of
    # `as_dict` while at their default, so those files read back and write out unchanged
    ADDED_LATER: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _fold_exposed(cls, data: Any) -> Any:
        """An exposed sub-config field given by name goes into its sub-config (over what that already holds)."""
        exposed = exposed_fields(cls) if isinstance(data, dict) else {}
        given = [name for name in exposed if name in data]
        if not given:
            return data
        data = dict(data)
        for name in given:
            holder = exposed[name][0]
            inner = data.get(holder) or {}
            inner = inner.model_dump() if isinstance(inner, BaseModel) else dict(inner)
            data[holder] = {**inner, name: data.pop(name)}
        return data

    @model_serializer(mode="wrap")
    def _leave_out_later_fields_at_default(self, handler: SerializerFunctionWrapHandler) -> dict:
        data = handler(self)
        for name in self.ADDED_LATER:
            if getattr(self, name) == type(self).model_fields[name].default:
                data.pop(name, None)
        return data

    def as_dict(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        return cls.model_validate(data)
