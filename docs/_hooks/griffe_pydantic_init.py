"""Griffe extension: give pydantic models the ``__init__`` signature pydantic makes at run time.

Griffe reads the source without importing it, so a pydantic model has no ``__init__`` of
its own and the ``Args:`` section of its docstring (one entry a field) would be reported
as "does not appear in the function signature". This extension adds the keyword-only
``__init__`` pydantic generates: one parameter per annotated field, own and inherited, in
definition order, with its annotation and default. The reference then shows each model's
real call signature, and a docstring entry naming no field still fails the strict build.
"""

from __future__ import annotations

from typing import Any

import griffe

# Bases that make a class a pydantic model but are not part of the loaded package.
PYDANTIC_BASES = frozenset(
    {
        "pydantic.BaseModel",
        "pydantic.main.BaseModel",
        "pydantic_settings.BaseSettings",
        "prefect.blocks.core.Block",
    }
)
_FIELD_CALLS = frozenset({"Field", "pydantic.Field", "pydantic.fields.Field"})


def _is_model(cls: griffe.Class) -> bool:
    for base in cls.resolved_bases:
        if base.canonical_path in PYDANTIC_BASES or _is_model(base):
            return True
    return any(
        str(base.canonical_path if isinstance(base, griffe.Expr) else base) in PYDANTIC_BASES
        for base in cls.bases
    )


def _default(value: str | griffe.Expr | None) -> str | griffe.Expr | None:
    """The default shown in the signature; None when the field is required."""
    if value is None:
        return None
    if isinstance(value, griffe.ExprCall) and str(value.function) in _FIELD_CALLS | {
        getattr(value.function, "canonical_path", "")
    }:
        keywords = {a.name: a.value for a in value.arguments if isinstance(a, griffe.ExprKeyword)}
        positional = [a for a in value.arguments if not isinstance(a, griffe.ExprKeyword)]
        if "default_factory" in keywords:
            return f"{keywords['default_factory']}()"
        default = keywords.get("default", positional[0] if positional else None)
        return None if default is None or str(default) == "..." else default
    return value


def _fields(cls: griffe.Class) -> dict[str, griffe.Attribute]:
    fields: dict[str, griffe.Attribute] = {}
    for klass in [*reversed(cls.mro()), cls]:
        for name, member in klass.members.items():
            if (
                member.is_alias
                or not isinstance(member, griffe.Attribute)
                or member.annotation is None
                or name.startswith("_")
                or name == "model_config"
                or "property" in member.labels
                or "ClassVar" in str(member.annotation)
            ):
                continue
            fields.pop(name, None)
            fields[name] = member
    return fields


class PydanticInit(griffe.Extension):
    """Add pydantic's generated ``__init__`` to every model of the loaded packages."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._visit(pkg)

    def _visit(self, obj: griffe.Module | griffe.Class) -> None:
        for member in obj.members.values():
            if member.is_alias:
                continue
            if isinstance(member, griffe.Module):
                self._visit(member)
            elif isinstance(member, griffe.Class):
                if "__init__" not in member.members and _is_model(member):
                    self._add_init(member)
                self._visit(member)

    @staticmethod
    def _add_init(cls: griffe.Class) -> None:
        parameters = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
        for name, attr in _fields(cls).items():
            parameters.append(
                griffe.Parameter(
                    name,
                    annotation=attr.annotation,
                    kind=griffe.ParameterKind.keyword_only,
                    default=_default(attr.value),
                )
            )
        init = griffe.Function(
            "__init__",
            parameters=griffe.Parameters(*parameters),
            returns="None",
            lineno=cls.lineno,
            endlineno=cls.lineno,
        )
        init.labels.add("pydantic-generated")
        cls.set_member("__init__", init)

