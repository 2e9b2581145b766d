"""MkDocs hooks: the reference pages are generated from the code when the site is built.

A page asks for generated content with a marker comment on a line of its own:

- ``<!-- hpsh:cli -->``: every verb of the command line, from the argparse parser of
  :func:`hpsh_tf2.cli.build_parser` (usage, arguments, defaults, help).
- ``<!-- hpsh:config -->``: every config key, from the frozen dataclasses of
  :mod:`hpsh_tf2.config` (type, default, allowed values, the value in each shipped YAML file
  that differs), with the allowed values of registry-backed keys taken from
  :data:`hpsh_tf2.registry.REGISTRIES`; the one-line meanings come from a field's
  ``metadata["doc"]`` or else from ``docs/reference/config-keys.yaml``.
- ``<!-- hpsh:registries -->``: every registry, its config key and its registered names.
- ``<!-- hpsh:api PREFIX ... -->``: a mkdocstrings ``::: module`` block for every module of
  the package under the given prefixes; ``<!-- hpsh:api-rest -->`` takes the modules that no
  other API page claims, so a new module always lands on some page.

Nothing is committed in generated form, so the reference cannot go stale: a new key, verb,
flag, registered name or module appears on the next build. ``tests/test_docs.py`` calls the
same functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # document this checkout's package, installed or not
    sys.path.insert(0, str(ROOT))

from hpsh_tf2 import cli, config, registry  # noqa: E402

DOCS = ROOT / "docs"
PACKAGE = ROOT / "hpsh_tf2"
DESCRIPTIONS = DOCS / "reference" / "config-keys.yaml"
SHIPPED_CONFIGS = ("aid.yaml", "ucmd.yaml", "aid_paper.yaml", "ucmd_paper.yaml")
API_PAGES = DOCS / "reference" / "api"
MARKER = re.compile(r"^<!-- hpsh:(?P<name>[a-z-]+)(?P<args>[^>]*)-->$", re.MULTILINE)


# ----------------------------------------------------------------------------- helpers


def _cell(text: Any) -> str:
    """Text made safe for one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(value: Any) -> str:
    """A value as inline code, in YAML spelling (``null``, ``true``, lists in flow style)."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("...").strip()
    return f"`{text}`"


# ----------------------------------------------------------------------------- the CLI


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help or ""
    return ""


def _argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            names = ", ".join(action.option_strings)
            if action.nargs != 0:
                names += " " + (action.metavar or action.dest.upper())
        else:
            names = action.metavar or action.dest
        default = action.default
        shown = "" if default in (None, [], False, argparse.SUPPRESS) else _code(default)
        required = "yes" if action.required else ""
        rows.append(f"| `{_cell(names)}` | {required} | {shown} | {_cell(action.help or '')} |")
    return rows


def cli_reference() -> str:
    """Markdown for every verb (and sub-verb) of :func:`hpsh_tf2.cli.build_parser`."""
    parser = cli.build_parser()
    out = ["### Global options", "", "```text", parser.format_usage().strip(), "```", ""]
    out += ["| argument | required | default | meaning |", "|---|---|---|---|"]
    out += _argument_rows(parser)
    out.append("")

    def verb(prefix: str, name: str, sub: argparse.ArgumentParser, text: str) -> None:
        title = f"{prefix} {name}".strip()
        out.extend([f"### `{title}`", "", text.rstrip(".") + "." if text else "", ""])
        out.extend(["```text", sub.format_usage().strip(), "```", ""])
        rows = _argument_rows(sub)
        if rows:
            out.extend(["| argument | required | default | meaning |", "|---|---|---|---|"])
            out.extend(rows)
            out.append("")
        for child, child_parser in _subparsers(sub).items():
            verb(title, child, child_parser, _help_of(sub, child))

    for name, sub in _subparsers(parser).items():
        verb("", name, sub, _help_of(parser, name))
    return "\n".join(out)


# ----------------------------------------------------------------------------- the config


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One config key as the reference shows it."""

    key: str
    type: str
    default: Any
    allowed: str
    meaning: str


def _leaves(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    leaves = []
    for fld in dataclasses.fields(cls):
        tp = hints[fld.name]
        if dataclasses.is_dataclass(tp):
            leaves.extend(_leaves(tp, f"{prefix}{fld.name}."))
        else:
            leaves.append((f"{prefix}{fld.name}", fld, tp))
    return leaves


def _type_name(tp: Any) -> str:
    """The YAML type of an annotation (the allowed values are a column of their own)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        kinds = {type(v) for v in typing.get_args(tp)}
        return _type_name(kinds.pop()) if len(kinds) == 1 else "scalar"
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        nullable = type(None) in typing.get_args(tp)
        return " or ".join(parts) + (" or null" if nullable else "")
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    names = {int: "integer", float: "number", str: "string", bool: "boolean"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _literal_values(tp: Any) -> str:
    """``one of `a`, `b` `` for a ``Literal`` (also inside ``Optional``), else ``any``."""
    for arg in (tp, *typing.get_args(tp)):
        if typing.get_origin(arg) is typing.Literal:
            values = ", ".join(_code(v) for v in typing.get_args(arg))
            return "one of " + values + (" or `null`" if arg is not tp else "")
    return "`true` or `false`" if tp is bool else "any"


def _default(fld: dataclasses.Field) -> Any:
    if fld.default is not dataclasses.MISSING:
        return fld.default
    if fld.default_factory is not dataclasses.MISSING:
        return fld.default_factory()
    return None


def _registry_names(reg: registry.Registry) -> str:
    return ", ".join(f"`{name}`" for name in reg.names())


def config_keys() -> list[KeyDoc]:
    """Every leaf key of :class:`hpsh_tf2.config.Config`, in declaration order."""
    meanings = yaml.safe_load(DESCRIPTIONS.read_text(encoding="utf-8")) or {}
    docs = []
    for key, fld, tp in _leaves(config.Config):
        reg = registry.REGISTRIES.get(key)
        if reg is not None and len(reg):
            allowed = "one of " + _registry_names(reg) + " (registry)"
        else:
            allowed = config.field_expected(fld) or _literal_values(tp)
        aliases = fld.metadata.get("aliases")
        if aliases:
            allowed += "; deprecated: " + ", ".join(
                f"`{old}` (= `{new}`)" for old, new in aliases.items()
            )
        meaning = fld.metadata.get("doc") or meanings.get(key, "")
        docs.append(KeyDoc(key, _type_name(tp), _default(fld), allowed, meaning))
    return docs


def _shipped_values() -> dict[str, dict[str, Any]]:
    """For each shipped YAML file, its resolved value of every key."""
    values = {}
    for name in SHIPPED_CONFIGS:
        path = ROOT / name
        if path.is_file():
            raw = config.config_to_dict(config.load_config(path))
            values[name] = _flatten(raw)
    return values


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in raw.items():
        if isinstance(value, dict) and value:  # an empty mapping (loss.options) is a value
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


TABLE_HEAD = "| key | type | default | allowed values | in the shipped configs | meaning |"


def config_reference() -> str:
    """Markdown tables of every config key, one table per section."""
    shipped = _shipped_values()
    out: list[str] = []
    section = None
    for doc in config_keys():
        head = doc.key.split(".")[0] if "." in doc.key else "(top level)"
        if head != section:
            section = head
            out.extend(["", f"### `{head}`" if head != "(top level)" else "### Top level", ""])
            out.append(TABLE_HEAD)
            out.append("|---|---|---|---|---|---|")
        default = doc.default if not isinstance(doc.default, tuple) else list(doc.default)
        differs = [
            f"{name}: {_code(values[doc.key])}"
            for name, values in shipped.items()
            if doc.key in values and values[doc.key] != default
        ]
        out.append(
            f"| `{doc.key}` | {_cell(doc.type)} | {_code(doc.default)} | {_cell(doc.allowed)} "
            f"| {_cell('; '.join(differs))} | {_cell(doc.meaning)} |"
        )
    return "\n".join(out).strip()


def registries_reference() -> str:
    """Markdown: each registry, the key it serves and its names (without importing them)."""
    out = ["| registry | config key | registered names |", "|---|---|---|"]
    for key, reg in registry.REGISTRIES.items():
        names = _registry_names(reg) or "(none registered)"
        out.append(f"| {reg.kind} | `{key}` | {names} |")
    return "\n".join(out)


# ----------------------------------------------------------------------------- the API


def package_modules() -> list[str]:
    """Every module of the package, dotted, sorted (packages by their ``__init__``)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts):
            continue
        names.append(".".join(parts))
    return names


def _matches(module: str, prefixes: list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def api_claims() -> dict[str, list[str]]:
    """For each API page, the module prefixes its ``hpsh:api`` markers claim."""
    claims = {}
    for page in sorted(API_PAGES.glob("*.md")):
        prefixes = []
        for match in MARKER.finditer(page.read_text(encoding="utf-8")):
            if match["name"] == "api":
                prefixes.extend(match["args"].split())
        claims[page.name] = prefixes
    return claims


def api_blocks(prefixes: list[str] | None) -> str:
    """mkdocstrings blocks for the modules under ``prefixes`` (``None``: the unclaimed)."""
    modules = package_modules()
    if prefixes is None:
        claimed = [p for ps in api_claims().values() for p in ps]
        chosen = [m for m in modules if not _matches(m, claimed)]
    else:
        chosen = [m for m in modules if _matches(m, prefixes) and not _claimed_deeper(m, prefixes)]
    if not chosen:
        return "(Every module is documented on another page.)"
    return "\n\n".join(f"::: {module}" for module in chosen)


def _claimed_deeper(module: str, prefixes: list[str]) -> bool:
    """A module claimed by a longer prefix on another page is left to that page."""
    own = max((p for p in prefixes if _matches(module, [p])), key=len)
    for others in api_claims().values():
        for p in others:
            if p not in prefixes and len(p) > len(own) and _matches(module, [p]):
                return True
    return False


# ----------------------------------------------------------------------------- the hook


def expand(markdown: str) -> str:
    """Replaces every marker comment of a page with its generated Markdown."""

    def replace(match: re.Match) -> str:
        name, args = match["name"], match["args"].split()
        if name == "cli":
            return cli_reference()
        if name == "config":
            return config_reference()
        if name == "registries":
            return registries_reference()
        if name == "api":
            return api_blocks(args)
        if name == "api-rest":
            return api_blocks(None)
        raise ValueError(f"unknown docs marker hpsh:{name}")

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: expand the generated sections of a page."""
    return expand(markdown)
