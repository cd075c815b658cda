"""Opaque, stable cursors for list endpoints.

Lists are ordered by id (ascending) and a cursor is the last id a page returned, so
rows inserted while a client pages appear at the end and never shift a page: no item
is skipped or repeated. The cursor is opaque (base64 of a tagged value) so clients do
not build them, and the format can change without breaking anyone.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from adplatform.campaigns.rules import MAX_ID
from adplatform.core.errors import ValidationFailed

_TAG: Final = "id:"
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_TAG}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The id to continue after (0 for the first page); a bad cursor is a 422."""
    if not cursor:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        if not raw.startswith(_TAG):
            raise ValueError(raw)
        value = int(raw[len(_TAG) :])
        if not 0 < value <= MAX_ID:
            raise ValueError(raw)
    except (ValueError, UnicodeError, binascii.Error):
        raise ValidationFailed(
            "cursor is not one this API returned",
            details=[{"field": "cursor", "message": "invalid cursor", "type": "cursor.invalid"}],
        ) from None
    return value
