"""Reading the engine's records: the one parser of their timestamps, for every consumer."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Optional

_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_timestamp(value: Optional[str]) -> Optional[datetime]:
    """A record's timestamp (ISO 8601, maybe with ``Z`` or nanoseconds) as an aware datetime;
    ``None`` for no value or one that cannot be read."""
    if not value:
        return None
    text = _LONG_FRACTION.sub(r"\1", value.strip())
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
