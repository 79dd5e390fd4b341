"""`medflow run -P section.key=value`, written into the params file as a person would edit it: only the line of each
key named changes; comments, their columns, `null`, flow lists and every other line stay as they were.

A YAML round trip (ruamel) rewrote the whole file: `null` became a blank beside comments saying "null keeps all" and
flow lists became blocks, a 41-line diff for 6 keys. Here the file is edited as text and read back: what it then
holds must equal the old values with the overrides applied, or nothing is written and the key is named.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from medflow import params
from medflow.params import ParamsError, apply_overrides, parse_override, read_yaml

_KEY = re.compile(r"([A-Za-z_][\w.-]*)\s*:(?=\s|$)")
_PLAIN_TEXT = re.compile(r"[A-Za-z_/][\w./-]*(?: [\w./-]+)*")


def render(value: Any) -> str:
    """value as YAML 1.2 on one line (flow style), read back as the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            (".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf"))
            if not math.isfinite(value)
            else repr(value)
        )
    if isinstance(value, str):
        return value if _PLAIN_TEXT.fullmatch(value) and read_yaml(value) == value else json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{render(str(k))}: {render(v)}" for k, v in value.items()) + "}"
    raise ParamsError(f"cannot write a value of type {type(value).__name__}")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


def _ends_block(line: str, indent: int) -> bool:
    """Whether line, below a key at indent, is no longer part of that key's value."""
    if not _content(line) or _indent(line) > indent:
        return False
    return _indent(line) < indent or not line.lstrip(" ").startswith("- ")


def _comment_at(text: str) -> int:
    """Index of the comment in text (a # after whitespace, outside quotes), or -1."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return i
    return -1


def _set_line(line: str, key_end: int, value: str) -> str:
    """The line with its value replaced; a comment keeps its column when the new value leaves room."""
    at = _comment_at(line[key_end:])
    head = f"{line[:key_end]} {value}"
    if at < 0:
        return head
    column = key_end + at
    return f"{head.ljust(column - 1)} {line[column:]}"


def _nested(keys: list[str], value: str, indent: int) -> list[str]:
    lines = [f"{' ' * (indent + 2 * i)}{k}:" for i, k in enumerate(keys[:-1])]
    return [*lines, f"{' ' * (indent + 2 * (len(keys) - 1))}{keys[-1]}: {value}"]


def edit_text(text: str, keys: list[str], value: str, merged: dict[str, Any]) -> str:
    """text with keys (a path of mapping keys) set to value (YAML on one line); merged: the whole file's values
    once every override is applied, for a key inside a flow mapping (`subgroup_bins: {}`), rewritten whole."""
    lines = text.splitlines()
    start, end, parent_indent = 0, len(lines), -2
    for depth, key in enumerate(keys):
        indent = next((_indent(lines[i]) for i in range(start, end) if _content(lines[i])), parent_indent + 2)
        found = next(
            (
                i
                for i in range(start, end)
                if _content(lines[i]) and _indent(lines[i]) == indent and (m := _KEY.match(lines[i].lstrip(" ")))
                and m.group(1) == key
            ),
            None,
        )  # fmt: skip
        if found is None:
            # A key the file does not write yet: after the last line of its section (the end of the file at the top).
            last = max((i for i in range(start, end) if _content(lines[i])), default=start - 1)
            at = end if depth == 0 else last + 1
            new = _nested(keys[depth:], value, indent)
            lines[at:at] = ["", *new] if depth == 0 and lines and lines[-1].strip() else new
            return "\n".join(lines) + "\n"
        # The key's block: the lines below it indented deeper (comments and blank lines between them included), and
        # the items of a block list at its own indent, as `dvc exp run -S` writes lists.
        stop = found + 1
        while stop < end and not _ends_block(lines[stop], indent):
            stop += 1
        while stop > found + 1 and not _content(lines[stop - 1]):
            stop -= 1
        key_end = indent + _KEY.match(lines[found].lstrip(" ")).end()
        rest = lines[found][key_end:]
        inline = rest[: _comment_at(rest)] if _comment_at(rest) >= 0 else rest
        if depth == len(keys) - 1 or inline.strip():
            if depth < len(keys) - 1:  # inside a flow mapping: the mapping is written again with the new value
                node = merged
                for k in keys[: depth + 1]:
                    node = node[k]
                value = render(node)
            lines[found : stop] = [_set_line(lines[found], key_end, value)]  # fmt: skip
            return "\n".join(lines) + "\n"
        start, end, parent_indent = found + 1, stop, indent
    raise AssertionError("unreachable: the loop returns at the last key")


def write(path: Path, overrides: list[str]) -> None:
    """Writes overrides into the YAML file at path, changing only their lines. Raises ParamsError, writing nothing,
    when the file would not read back as the overrides say."""
    old = path.read_text() if path.exists() else ""
    expected = apply_overrides(read_yaml(old) or {}, overrides)
    text = old
    for override in overrides:
        keys, value = parse_override(override)
        raw = override.partition("=")[2].strip()
        one_line = raw if raw and "\n" not in raw else render(value)
        text = edit_text(text, keys, one_line, expected)
    try:
        wrote = read_yaml(text)
    except Exception as exc:  # the YAML reader's own error types
        raise ParamsError(f"{path}: -P would break the file ({type(exc).__name__}): edit it by hand") from None
    if json.loads(json.dumps(wrote)) != expected:
        keys = ", ".join(o.partition("=")[0] for o in overrides)
        raise ParamsError(f"{path}: -P {keys} cannot be written in place here: edit the file by hand")
    if text != old:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # a kill mid-write leaves the previous file whole


def write_overrides(path: Path, overrides: list[str]) -> dict[str, list[str]]:
    """Edits the params file the run reads, only the lines of the keys named, as `dvc exp run -S` edits params.yaml,
    so the file (and dvc.lock, for params.yaml) records what ran. A train.* key that the tuned file sets is edited
    there instead, when its values apply: they are layered over the params file's. Returns file name -> keys."""
    # Only where they apply: the tuned values of another table's study are ignored, and so would be an edit there.
    wanted = params.apply_overrides(params.read_yaml(path.read_text()) or {}, overrides)
    tuned = set(params.tuned_values(path)) if params.tuned_mismatch(path, wanted) is None else set()

    def in_tuned(text: str) -> bool:
        keys, _ = params.parse_override(text)
        return len(keys) == 2 and keys[0] == "train" and keys[1] in tuned

    written = {}
    for file, texts in (
        (path, [o for o in overrides if not in_tuned(o)]),
        (params.tuned_file(path), [o for o in overrides if in_tuned(o)]),
    ):
        if texts:
            write(file, texts)
            written[file.name] = [t.partition("=")[0].strip() for t in texts]
    return written
