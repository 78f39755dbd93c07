"""Safe ``{field}`` rendering of prompt templates against task data.

Only the template is parsed: values from task data are inserted verbatim, so braces, ``{0}`` or
``{__class__}`` inside a task are plain text. ``{{`` and ``}}`` in a template are literal braces.
``{task}`` renders every input field of the label config as "name: value" blocks.
"""
from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .types import JudgeError

TASK_FIELD = "task"
_FORMATTER = string.Formatter()


class TemplateError(ValueError):
    """The template itself is malformed (a stray brace, a format spec)."""


@dataclass
class Rendered:
    text: str
    warnings: list[str] = field(default_factory=list)


def template_fields(template: str) -> list[str]:
    """The field names a template uses, in order; raises TemplateError on malformed braces."""
    names: list[str] = []
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise TemplateError(f"prompt template has unbalanced braces ({exc}); write {{{{ and }}}} for literal braces") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not name or spec or conversion:
            raise TemplateError(
                f"prompt template placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not allowed: use {{field_name}} only"
            )
        names.append(name)
    return names


def render(
    template: str,
    data: Mapping[str, Any],
    *,
    field_map: Mapping[str, str] | None = None,
    input_keys: Sequence[str] = (),
    max_chars: int = 8000,
) -> Rendered:
    """Fill ``template`` from ``data``; ``field_map`` renames template names to data keys.

    A missing field raises JudgeError naming the field and the keys the task has; a value longer
    than ``max_chars`` is cut (with a warning) so a huge task cannot blow the context window.
    """
    field_map = field_map or {}
    out: list[str] = []
    warnings: list[str] = []
    for literal, name, _, _ in _FORMATTER.parse(template):
        out.append(literal)
        if name is None:
            continue
        if name == TASK_FIELD and TASK_FIELD not in data:
            value = "\n\n".join(
                f"{key}:\n{_text(_lookup(data, key, key))}" for key in input_keys if _has(data, key)
            )
        else:
            key = field_map.get(name, name)
            if not _has(data, key):  # absent and null are the same: nothing to judge, so abstain
                have = ", ".join(sorted(str(k) for k, v in data.items() if v is not None)) or "no fields"
                null = " (it is null)" if key in data else ""
                raise JudgeError(f"task is missing field {key!r} used by the prompt{null} (task has: {have})")
            value = _text(_lookup(data, key, name))
        if len(value) > max_chars:
            warnings.append(f"field {name!r} truncated from {len(value)} to {max_chars} characters")
            value = value[:max_chars] + f" ...[truncated {len(value) - max_chars} characters]"
        out.append(value)
    text = "".join(out)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (bad JSON escapes in task data) cannot be sent anywhere
        text = "".join(c if not 0xD800 <= ord(c) <= 0xDFFF else "\ufffd" for c in text)
        warnings.append("task text had invalid characters (lone surrogates); replaced with U+FFFD")
    return Rendered(text, warnings)


def _has(data: Mapping[str, Any], key: str) -> bool:
    """Whether the task has a value at ``key``: a null (``"output": null``) counts as missing."""
    try:
        return _lookup(data, key, key) is not None
    except KeyError:
        return False


def _lookup(data: Mapping[str, Any], key: str, name: str) -> Any:
    """``a.b`` walks into nested dicts; a literal key with a dot wins."""
    if key in data:
        return data[key]
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(name)
        node = node[part]
    return node


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, Mapping) and "content" in m for m in value):
        return "\n".join(f"{m.get('role') or m.get('user') or 'message'}: {m['content']}" for m in value)
    return json.dumps(value, ensure_ascii=False, indent=1)
