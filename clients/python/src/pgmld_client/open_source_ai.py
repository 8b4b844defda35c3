"""``OpenSourceAI``: PostgresML's chat-completion client, over psycopg and pgml.transform.

Each call opens its own connection to the database URL (pgmld), runs

- ``SELECT pgml.transform(task => %s::jsonb, inputs => %s::jsonb[], args => %s::jsonb)``, or
- for streams, ``BEGIN``, ``DECLARE c CURSOR FOR SELECT pgml.transform_stream(...)``, then
  ``FETCH 1 FROM c`` until no row is left, and ``COMMIT``,

and closes it. Closing a stream early closes its connection, which stops the generation.
"""

from __future__ import annotations

import os
import time
from typing import Any, AsyncIterator, Dict, Iterator, Mapping, Optional, Sequence

import psycopg
from psycopg.types.json import Jsonb

from ._request import Call, Model, build_call
from ._response import chunk, completion, last_chunk, new_id, stream_row
from .errors import PgmlError

TRANSFORM_SQL = "SELECT pgml.transform(task => %s::jsonb, inputs => %s::jsonb[], args => %s::jsonb)"
DECLARE_SQL = (
    "DECLARE c CURSOR FOR SELECT pgml.transform_stream(task => %s::jsonb, inputs => %s::jsonb[], args => %s::jsonb)"
)
FETCH_SQL = "FETCH 1 FROM c"

#: The environment variable read when no database URL is given (as the SDK does).
DATABASE_URL_ENV = "PGML_DATABASE_URL"


def _params(call: Call) -> tuple:
    return (Jsonb(call.task), [Jsonb(m) for m in call.inputs], Jsonb(call.args))


def _check_streamable(call: Call) -> None:
    if call.args.get("num_return_sequences", 1) != 1:
        raise ValueError("streaming returns one choice: n must be 1")


class ChatStream(Iterator[Dict[str, Any]]):
    """The chunks of a streamed completion, fetched one row at a time as they are
    generated. Iterate it, or use it as a context manager to close it early."""

    def __init__(self, conn: psycopg.Connection, call: Call) -> None:
        self._conn: Optional[psycopg.Connection] = conn
        self._call = call
        self._id = new_id()
        self._created = int(time.time())

    def __iter__(self) -> "ChatStream":
        return self

    def __next__(self) -> Dict[str, Any]:
        if self._conn is None:
            raise StopIteration
        try:
            row = self._conn.execute(FETCH_SQL).fetchone()
            if row is None:
                self._conn.execute("COMMIT")
        except psycopg.Error as e:
            self.close()
            raise PgmlError.from_psycopg(e) from e
        if row is None:
            self.close()
            raise StopIteration
        parsed = stream_row(row[0])
        if parsed[0] == "piece":
            return chunk(self._call, self._id, self._created, parsed[1])
        return last_chunk(self._call, self._id, self._created, parsed[1], parsed[2])

    def close(self) -> None:
        """Stops the stream: closing the connection ends the generation in pgmld."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> "ChatStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class AsyncChatStream(AsyncIterator[Dict[str, Any]]):
    """:class:`ChatStream` for asyncio (``async for``, ``async with``)."""

    def __init__(self, conn: psycopg.AsyncConnection, call: Call) -> None:
        self._conn: Optional[psycopg.AsyncConnection] = conn
        self._call = call
        self._id = new_id()
        self._created = int(time.time())

    def __aiter__(self) -> "AsyncChatStream":
        return self

    async def __anext__(self) -> Dict[str, Any]:
        if self._conn is None:
            raise StopAsyncIteration
        try:
            cur = await self._conn.execute(FETCH_SQL)
            row = await cur.fetchone()
            if row is None:
                await self._conn.execute("COMMIT")
        except psycopg.Error as e:
            await self.aclose()
            raise PgmlError.from_psycopg(e) from e
        if row is None:
            await self.aclose()
            raise StopAsyncIteration
        parsed = stream_row(row[0])
        if parsed[0] == "piece":
            return chunk(self._call, self._id, self._created, parsed[1])
        return last_chunk(self._call, self._id, self._created, parsed[1], parsed[2])

    async def aclose(self) -> None:
        """Stops the stream: closing the connection ends the generation in pgmld."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> "AsyncChatStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class OpenSourceAI:
    """Chat completions from models served by pgmld (or PostgresML), in OpenAI's shape.

    ``model`` is a model name (a pgml project, ``pgml:<id>``, a ``.gguf`` file or model
    directory on the server, a Hub repo id) or a dict ``{"model": name, ...options}`` as
    in PostgresML's guide (``load_in_8bit``, ``token``, ``adapter``, ``revision``, and
    generation settings such as ``temperature`` or ``repetition_penalty``).
    """

    def __init__(self, database_url: Optional[str] = None) -> None:
        url = database_url or os.environ.get(DATABASE_URL_ENV)
        if not url:
            raise ValueError(f"pass a database URL or set {DATABASE_URL_ENV}")
        self.database_url = url

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.database_url, autocommit=True)
        except psycopg.Error as e:
            raise PgmlError.from_psycopg(e) from e

    async def _connect_async(self) -> psycopg.AsyncConnection:
        try:
            return await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)
        except psycopg.Error as e:
            raise PgmlError.from_psycopg(e) from e

    def chat_completions_create(
        self,
        model: Model,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        n: Optional[int] = None,
        chat_template: Optional[str] = None,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        """A ``chat.completion`` dict: id, object, created, model, system_fingerprint,
        choices (index, message {role, content}, finish_reason) and usage with the real
        token counts. Extra keyword arguments are model options or generation settings.
        Raises :class:`PgmlError` (with the SQLSTATE) when pgmld refuses the call."""
        call = build_call(model, messages, max_tokens, temperature, n, chat_template, kwargs)
        with self._connect() as conn:
            try:
                answer = conn.execute(TRANSFORM_SQL, _params(call)).fetchone()[0]
            except psycopg.Error as e:
                raise PgmlError.from_psycopg(e) from e
        return completion(call, answer)

    def chat_completions_create_stream(
        self,
        model: Model,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        n: Optional[int] = None,
        chat_template: Optional[str] = None,
        **kwargs: Any,
    ) -> ChatStream:
        """Starts a streamed completion and returns its chunks (``chat.completion.chunk``
        dicts with ``choices[0].delta.content``; the last has ``finish_reason`` and
        ``usage``). The call itself raises :class:`PgmlError` for a bad request."""
        call = build_call(model, messages, max_tokens, temperature, n, chat_template, kwargs)
        _check_streamable(call)
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            conn.execute(DECLARE_SQL, _params(call))
        except psycopg.Error as e:
            conn.close()
            raise PgmlError.from_psycopg(e) from e
        return ChatStream(conn, call)

    async def chat_completions_create_async(
        self,
        model: Model,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        n: Optional[int] = None,
        chat_template: Optional[str] = None,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        """:meth:`chat_completions_create` for asyncio."""
        call = build_call(model, messages, max_tokens, temperature, n, chat_template, kwargs)
        conn = await self._connect_async()
        try:
            cur = await conn.execute(TRANSFORM_SQL, _params(call))
            answer = (await cur.fetchone())[0]
        except psycopg.Error as e:
            raise PgmlError.from_psycopg(e) from e
        finally:
            await conn.close()
        return completion(call, answer)

    async def chat_completions_create_stream_async(
        self,
        model: Model,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        n: Optional[int] = None,
        chat_template: Optional[str] = None,
        **kwargs: Any,
    ) -> AsyncChatStream:
        """:meth:`chat_completions_create_stream` for asyncio (``async for`` the result)."""
        call = build_call(model, messages, max_tokens, temperature, n, chat_template, kwargs)
        _check_streamable(call)
        conn = await self._connect_async()
        try:
            await conn.execute("BEGIN")
            await conn.execute(DECLARE_SQL, _params(call))
        except psycopg.Error as e:
            await conn.close()
            raise PgmlError.from_psycopg(e) from e
        return AsyncChatStream(conn, call)
