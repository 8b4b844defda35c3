"""``import pgml`` for code written against PostgresML's SDK: the same ``OpenSourceAI``
as :mod:`pgmld_client` (which see). Do not install this package next to PostgresML's own
``pgml`` package: both provide this module."""

from pgmld_client import AsyncChatStream, ChatStream, OpenSourceAI, PgmlError

__all__ = ["OpenSourceAI", "ChatStream", "AsyncChatStream", "PgmlError"]
