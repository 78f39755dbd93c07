"""The CLI reference as Markdown, generated from the argparse parser so the docs cannot drift from it."""
from __future__ import annotations

import argparse


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    names = ", ".join(action.option_strings)
    takes = action.nargs != 0
    return f"`{names} {action.metavar or action.dest.upper()}`" if takes else f"`{names}`"


def _default(action: argparse.Action) -> str:
    if action.required or not action.option_strings:
        return "required"
    if action.nargs == 0 or action.default in (None, "", argparse.SUPPRESS):
        return ""
    return f"`{action.default}`"


def _cell(text: str | None) -> str:
    return " ".join((text or "").replace("|", "\\|").split()).replace("%%", "%")


def cli_reference(parser: argparse.ArgumentParser) -> str:
    """One section per command: what it does, and a table of its arguments."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    out = ["# CLI reference", "", "Generated from `labeljudge`'s parser (`python scripts/gen_reference.py`); "
           "`labeljudge COMMAND --help` says the same.", ""]
    for name, command in sub.choices.items():
        out += [f"## `labeljudge {name}`", "", _cell(helps.get(name)), ""]
        rows = [a for a in command._actions if not isinstance(a, argparse._HelpAction)]
        if rows:
            out += ["| argument | default | meaning |", "|---|---|---|"]
            out += [f"| {_flags(a)} | {_default(a)} | {_cell(a.help)} |" for a in rows]
            out.append("")
    return "\n".join(out)


GENERATED = ("settings", "extra-params")


def fill_markers(text: str, parts: dict[str, str]) -> str:
    """``text`` with each ``<!-- generated: NAME ... -->`` ... ``<!-- end: NAME -->`` block refilled."""
    import re

    for name, body in parts.items():
        pattern = re.compile(rf"(<!-- generated: {re.escape(name)}[^>]*-->\n).*?(<!-- end: {re.escape(name)} -->)", re.S)
        found = pattern.search(text)
        if found is None:
            raise ValueError(f"no generated block named {name!r}")
        text = text[:found.end(1)] + body + text[found.start(2):]
    return text


def _parser_without_env(build):
    """The parser as a clean environment builds it: some defaults come from variables (LABEL_STUDIO_URL,
    HOST_BIND), and the reference must not hold whatever this shell had set (or its token)."""
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}, clear=True):
        return build()


def generated_docs(docs_dir) -> dict:
    """Every generated docs file (path -> the text it must hold), from the code's declarations."""
    from pathlib import Path

    from ..settings import params_reference, settings_reference
    from .main import build_parser

    docs_dir = Path(docs_dir)
    config = docs_dir / "configuration.md"
    return {
        config: fill_markers(config.read_text(), {"settings": settings_reference(), "extra-params": params_reference()}),
        docs_dir / "cli-reference.md": cli_reference(_parser_without_env(build_parser)),
    }
