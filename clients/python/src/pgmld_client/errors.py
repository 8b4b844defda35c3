"""Errors raised by the client."""

from __future__ import annotations

from typing import Optional


class PgmlError(Exception):
    """A statement failed in Postgres (pgmld): carries the SQLSTATE and the server's
    message, detail and hint, so callers can tell bad input (22023, 42704, 0A000, ...)
    from a cancel (57014) or a lost connection (sqlstate None)."""

    def __init__(
        self,
        message: str,
        sqlstate: Optional[str] = None,
        detail: Optional[str] = None,
        hint: Optional[str] = None,
    ) -> None:
        self.message = message
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint
        text = f"{sqlstate}: {message}" if sqlstate else message
        if detail:
            text += f"\nDETAIL: {detail}"
        if hint:
            text += f"\nHINT: {hint}"
        super().__init__(text)

    @classmethod
    def from_psycopg(cls, error: Exception) -> "PgmlError":
        """The PgmlError for a psycopg error (its diagnostics when the server sent them)."""
        diag = getattr(error, "diag", None)
        message = getattr(diag, "message_primary", None) or str(error).strip()
        return cls(
            message,
            sqlstate=getattr(error, "sqlstate", None),
            detail=getattr(diag, "message_detail", None),
            hint=getattr(diag, "message_hint", None),
        )
