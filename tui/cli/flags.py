"""`slm` flags derived from the engine's config dataclasses: each flag's name, type and help come from its field.

A field declared with `core.config.option(default, help)` is a flag: `max_steps` is `--max-steps`; a Literal
field offers its values as choices; a bool field is a switch (`--compile`, or `--no-tie-embeddings` for one that
defaults to True). With `defaults=True` a flag's default is the field's and its help shows it; otherwise the
flag is None unless given, so a preset fills what the user left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from core.config import field_types


@dataclass(frozen=True)
class Flag:
    field: str  # the config field, and the parsed argument's name
    kind: type  # int, float, str, bool, or dict (NAME=WEIGHT pairs)
    help: str
    default: Any  # the field's default
    choices: tuple[str, ...] | None = None
    many: bool = False  # a list field
    repeat: bool = False  # a list field that takes one value per use of the flag

    @property
    def name(self) -> str:
        dashed = self.field.replace("_", "-")
        return f"--no-{dashed}" if self.kind is bool and self.default is True else f"--{dashed}"


def _kind(hint: Any) -> tuple[type, tuple[str, ...] | None, bool]:
    """(element type, choices, is a list) of a field's type hint: `int | None` is int, `Literal[...]` str."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is typing.Literal:
        return str, tuple(typing.get_args(hint)), False
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], None, True
    if typing.get_origin(hint) is dict:
        return dict, None, False
    return hint, None, False


def config_flags(cls: type, names: list[str] | None = None) -> list[Flag]:
    """The flags of a config dataclass (those of `names` only, in their order, when given)."""
    hints = field_types(cls)
    flags = {}
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        kind, choices, many = _kind(hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        flags[f.name] = Flag(f.name, kind, f.metadata["help"], default, choices, many, f.metadata["repeat"])
    return [flags[n] for n in names] if names is not None else list(flags.values())


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flags: list[Flag],
    *,
    defaults: bool = False,
    shown: set[str] = frozenset(),
    prefix: str = "",
    help_for: dict[str, str] | None = None,
) -> None:
    """Add `flags` to `parser`. `defaults`: each flag defaults to its field's default, shown in its help;
    otherwise flags default to None and only those in `shown` name the field's default in their help.
    `prefix` starts every help text; `help_for` replaces the help of some fields."""
    for flag in flags:
        text = prefix + (help_for or {}).get(flag.field, flag.help)
        if (defaults or flag.field in shown) and flag.default not in (None, [], ()) and flag.kind is not bool:
            text += f" (default {flag.default:g})" if isinstance(flag.default, float) else f" (default {flag.default})"
        options: dict[str, Any] = {"dest": flag.field, "help": text, "default": flag.default if defaults else None}
        if flag.kind is bool:
            options.update(action="store_const", const=not flag.default)
        elif flag.kind is dict:  # mixture weights, NAME=WEIGHT,...
            options.update(type=_weights, metavar="NAME=WEIGHT,...")
        elif flag.repeat:
            options.update(action="append", type=flag.kind, default=list(flag.default) if defaults else None)
        else:
            options.update(type=flag.kind, choices=flag.choices, nargs="+" if flag.many else None)
        parser.add_argument(flag.name, **options)


def _weights(text: str) -> dict[str, float]:
    from core.data.mixture import parse_mix
    from core.errors import SLMError

    try:
        return parse_mix(text)
    except SLMError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("mix: ")) from None


def collect(args: argparse.Namespace, flags: list[Flag]) -> dict[str, Any]:
    """The values of `flags` that were given (not None), by field name."""
    return {f.field: getattr(args, f.field) for f in flags if getattr(args, f.field, None) is not None}
