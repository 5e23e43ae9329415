"""Showing `Settings`: plain data with secrets masked, the secrets for the log redactor, TOML.

`check-config` prints what the bridge would run with, pasteable back into a file. `masked` and
`secret_values` share one walk over the fields, so no secret can be shown that the log redactor
does not know about.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from bridge.config.settings import Settings, key_name


def _plain(obj: Any, secret: Callable[[Any], Any]) -> Any:
    """Settings as plain data; each secret's value passes through `secret`."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if f.name == "source":
                continue
            value = getattr(obj, f.name)
            out[key_name(f)] = _plain(secret(value) if f.metadata.get("secret") else value,
                                       secret)
        return out
    if isinstance(obj, tuple):
        return [_plain(v, secret) for v in obj]
    if isinstance(obj, Mapping):
        return {k: _plain(v, secret) for k, v in obj.items()}
    return obj


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with every secret replaced by asterisks."""
    result: dict[str, Any] = _plain(settings, lambda v: "********" if v else "")
    return result


def secret_values(settings: Settings) -> list[str]:
    """Every secret that is set, for the log redactor."""
    found: list[str] = []

    def keep(value: Any) -> Any:
        if value:
            found.append(str(value))
        return value

    _plain(settings, keep)
    return found


def to_toml(data: Mapping[str, Any]) -> str:
    """Render settings as TOML, for `check-config` output that can be pasted back into a file."""
    import json

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list) and v and isinstance(v[0], dict):
            return "[" + ", ".join("{ " + ", ".join(f"{k} = {value(x)}" for k, x in d.items())
                                   + " }" for d in v) + "]"
        return json.dumps(v, ensure_ascii=False)

    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, v in data.items():
        if isinstance(v, Mapping):
            tables.append((key, v))
        else:
            lines.append(f"{key} = {value(v)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        subtables = []
        for key, v in table.items():
            if isinstance(v, Mapping):
                subtables.append((key, v))
            else:
                lines.append(f"{key} = {value(v)}")
        for key, sub in subtables:
            lines.append(f"[{name}.{key}]")
            lines.extend(f"{json.dumps(k)} = {value(x)}" for k, x in sub.items())
    return "\n".join(lines) + "\n"
