"""Former home of the response helpers, now all in `imapd.responses`.

Only `internal_date` is still importable from here, for existing imports
(the unit tests pin its locale-independence under this name); the server
itself imports `imapd.responses`.
"""

from __future__ import annotations

from imapd.responses import internal_date

__all__ = ["internal_date"]
