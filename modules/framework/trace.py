"""One readable line per EVerest message, for ``everkit run --trace`` and the demo."""

from __future__ import annotations

import json
from typing import Any

from .wire import MsgType, decode

_MAX = 160


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= _MAX else text[: _MAX - 3] + "..."


def describe(topic: str, payload: bytes, prefix: str) -> str | None:
    """A line such as ``consumer -> supply.main  cmd setMode {...}``; None to stay quiet."""
    if not topic.startswith(prefix) or not payload:
        return None
    path = topic[len(prefix) :].split("/")
    try:
        envelope = decode(payload)
    except Exception as exc:
        return f"{topic}  MALFORMED: {exc}"
    data = envelope.data
    if path[0] != "modules" or len(path) < 3:
        return f"{'/'.join(path)}  {envelope.msg_type}" if path[0] == "ready" else None
    module = path[1]
    if path[2] == "ready":
        return f"{module}  ready"
    if path[2] != "impl" or len(path) < 6:
        return None
    impl, kind, rest = path[3], path[4], path[5:]
    where = f"{module}.{impl}"
    if kind == "var" and isinstance(data, dict):
        return f"{where}  var {rest[0]} = {_short(data.get('data'))}"
    if kind == "cmd" and envelope.msg_type == MsgType.CMD and isinstance(data, dict):
        return f"{data.get('origin')} -> {where}  cmd {rest[0]} {_short(data.get('args'))}"
    if kind == "cmd" and envelope.msg_type == MsgType.CMD_RESULT and isinstance(data, dict):
        inner = data.get("data") or {}
        if "error" in inner:
            return f"{where} -> {rest[-1]}  {rest[0]} failed: {_short(inner['error'])}"
        return f"{where} -> {rest[-1]}  {rest[0]} returned {_short(inner.get('retval'))}"
    if kind == "error" and isinstance(data, dict):
        verb = "RAISED" if envelope.msg_type == MsgType.RAISE_ERROR else "cleared"
        what = f"{data.get('type')} ({data.get('severity')})"
        return f"{where}  error {verb} {what} {data.get('message')!r}"
    return None
