"""`logging.format: json`: one JSON object per log line, for log shippers.

Each record becomes ``{"time": "2026-12-07T05:34:53.123Z", "level": "INFO",
"logger": "mssctl.serve", "process": 4711, "message": "..."}`` on one line,
with ``"exception"`` (the whole traceback, one string) when the record
carries one. Twisted's own log events reach the same handler through
`mssctl.serve._route_twisted_logs` (logger ``twisted``), so every line the
daemon writes has this shape. Like the text format, it carries what the code
logs and never message content.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, object] = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: a line is one line whatever the message holds
        # (json.dumps escapes CR, LF and other control characters anyway).
        return json.dumps(out, ensure_ascii=True, default=str)
