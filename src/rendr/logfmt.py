"""Machine-readable logs: one JSON object per :mod:`logging` record.

:class:`JsonFormatter` turns each record into one line of JSON with ``time`` (UTC,
ISO 8601 with milliseconds), ``level``, ``logger`` and ``message``, followed by every
structured field the caller passed with ``extra=`` (rendr's forwarder passes
``flow_id``, ``path_id``, ``event`` and the like) and, when there is one, the
formatted exception as ``exc_info``::

    import logging, sys
    from rendr.logfmt import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("rendr").addHandler(handler)

``rendr serve --json`` and ``rendr connect --json`` log this way on stderr.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import logging
from typing import Any, TextIO

__all__ = ["JsonFormatter", "json_handler"]

# Every attribute a bare LogRecord has (plus the ones Formatter.format adds): whatever
# else a record carries came from ``extra=`` and is a structured field.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


def _jsonable(value: Any) -> Any:
    """``value`` as something :func:`json.dumps` takes (bytes as hex, an enum by its
    text value or else its lower-case name, anything else unknown as its ``str``)."""
    if isinstance(value, enum.Enum):  # (before int: an IntEnum is an int)
        return value.value if isinstance(value.value, str) else value.name.lower()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module's docstring).

    Args:
        static: fields added to every record (e.g. ``{"role": "serve"}``); a record's
            own fields win over them.
    """

    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._static = dict(static or {})

    def formatTime(self, record: logging.LogRecord,
                   datefmt: str | None = None) -> str:
        when = _dt.datetime.fromtimestamp(record.created, tz=_dt.timezone.utc)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in self._static.items():
            out.setdefault(key, _jsonable(value))
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = _jsonable(value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def json_handler(stream: TextIO, static: dict[str, Any] | None = None) -> logging.Handler:
    """A :class:`logging.StreamHandler` on ``stream`` with a :class:`JsonFormatter`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(static))
    return handler
