"""The log format of every memhp command: ``--log.level`` and ``--log.format``.

As Prometheus' own programs log (slog through promslog): one line per record,
``time=2026-01-02T03:04:05.678Z level=info source=cli.py:42 msg="listening on :10301"``
in ``logfmt``, or the same keys as one JSON object per line in ``json``.
Times are RFC 3339 in UTC.  An exception becomes ``err="Type: message"`` on
the same line; its traceback is added (as ``stack``, still one line) only at
``--log.level=debug``, so no traceback reaches an operator who did not ask.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

LEVELS = ("debug", "info", "warn", "error")
FORMATS = ("logfmt", "json")
_PY_LEVEL = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_ALIASES = {"warning": "warn"}  # the older spelling, still accepted


def parse_level(text: str) -> str:
    """A ``--log.level`` value (``warning`` is taken for ``warn``); ValueError otherwise."""
    level = _ALIASES.get(text.lower(), text.lower())
    if level not in _PY_LEVEL:
        raise ValueError(f"not a log level: {text!r} (one of {', '.join(LEVELS)})")
    return level


def _level_name(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\') and text.isprintable():
        return text
    # json.dumps escapes quotes, backslashes and every control character: one line, always
    return json.dumps(text, ensure_ascii=False)


class _Formatter(logging.Formatter):
    def __init__(self, with_stack: bool) -> None:
        super().__init__()
        self.with_stack = with_stack

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": _level_name(record.levelno),
            "source": f"{record.filename}:{record.lineno}",
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update({str(k): v for k, v in extra.items() if k not in out})
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["err"] = f"{type(exc).__name__}: {exc}"
            if self.with_stack:
                out["stack"] = "".join(traceback.format_exception(exc)).rstrip()
        return out


class LogfmtFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in self.fields(record).items())


class JSONFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), ensure_ascii=False, default=str)


def setup_logging(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Configure the root logger of this process (replacing an earlier call's set-up)."""
    level = parse_level(level)
    handler = logging.StreamHandler(stream or sys.stderr)
    with_stack = level == "debug"
    handler.setFormatter(JSONFormatter(with_stack) if fmt == "json" else LogfmtFormatter(with_stack))
    handler.memhp = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    # Only an earlier call's handler goes: others (pytest's capture) belong to whoever added them.
    for old in list(root.handlers):
        if getattr(old, "memhp", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_PY_LEVEL[level])
    threading.excepthook = _thread_died


def _thread_died(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc = args.exc_value
    logging.getLogger("memhp").error(
        "thread %s stopped on an unexpected error",
        name,
        exc_info=(args.exc_type, exc, args.exc_traceback) if exc is not None else None,
    )
