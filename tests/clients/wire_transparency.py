#!/usr/bin/env python3
"""Wire transparency through pgmld, as real drivers see it (issue #20): psycopg 3,
psycopg_pool and asyncpg against the same DSN. Runs unchanged against plain Postgres.

usage: python3 tests/clients/wire_transparency.py DSN

Checks, per driver: the backend pid the driver was told equals pg_backend_pid() and the
pid of its own NOTIFY; pg_terminate_backend(that pid) from a second session ends the first
with 57P01 (AdminShutdown) and a pool's check replaces the connection; cancel still stops
a running query.

Needs psycopg, psycopg_pool and asyncpg from .deps/python (`scripts/setup.sh deps`).
Prints "wire transparency ok" and exits 0; any failure raises.
"""

import asyncio
import sys
import threading
import time

import asyncpg
import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool


def terminate(dsn, pid):
    """pg_terminate_backend(pid) from another session; true when a backend was signalled."""
    with psycopg.connect(dsn, autocommit=True) as other:
        return other.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def psycopg_pid_and_notify(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        pid = conn.info.backend_pid
        server_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert pid == server_pid, f"backend_pid {pid} != pg_backend_pid() {server_pid}"
        conn.execute("LISTEN wire_chan")
        conn.execute("NOTIFY wire_chan, 'self'")
        notes = list(conn.notifies(timeout=5, stop_after=1))
        assert notes, "no notification received"
        assert notes[0].pid == pid, f"NOTIFY pid {notes[0].pid} != backend_pid {pid}"
        assert notes[0].payload == "self"


def psycopg_terminate(dsn):
    conn = psycopg.connect(dsn, autocommit=True)
    pid = conn.info.backend_pid
    assert terminate(dsn, pid), f"pg_terminate_backend({pid}) found no backend"
    try:
        conn.execute("SELECT 1")
    except errors.AdminShutdown:
        pass
    else:
        raise AssertionError("statement after pg_terminate_backend succeeded")
    assert conn.closed, "connection still open after 57P01"
    # In a transaction: the failed statement, then the rollback, as Postgres reports them.
    conn = psycopg.connect(dsn)
    conn.execute("SELECT 1")
    assert terminate(dsn, conn.info.backend_pid)
    try:
        conn.execute("SELECT 2")
    except errors.AdminShutdown:
        pass
    else:
        raise AssertionError("statement in a transaction after terminate succeeded")
    try:
        conn.rollback()
    except psycopg.OperationalError:
        pass
    assert conn.closed


def psycopg_pool_replaces(dsn):
    with ConnectionPool(
        dsn, min_size=1, max_size=1, check=ConnectionPool.check_connection, open=True
    ) as pool:
        pool.wait(timeout=10)
        with pool.connection() as conn:
            first = conn.info.backend_pid
        assert terminate(dsn, first)
        with pool.connection() as conn:
            second = conn.info.backend_pid
            assert conn.execute("SELECT 7").fetchone()[0] == 7
        assert second != first, "pool handed out the terminated connection"
        assert pool.get_stats().get("connections_lost", 0) >= 1, pool.get_stats()


def psycopg_cancel(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        timer = threading.Timer(0.3, conn.cancel_safe)
        timer.start()
        started = time.monotonic()
        try:
            conn.execute("SELECT pg_sleep(30)")
        except errors.QueryCanceled:
            pass
        else:
            raise AssertionError("pg_sleep was not cancelled")
        finally:
            timer.cancel()
        assert time.monotonic() - started < 5
        assert conn.execute("SELECT 3").fetchone()[0] == 3


async def asyncpg_checks(dsn):
    conn = await asyncpg.connect(dsn)
    pid = conn.get_server_pid()
    assert pid == await conn.fetchval("SELECT pg_backend_pid()")
    got = asyncio.get_running_loop().create_future()
    await conn.add_listener("wire_chan", lambda c, p, ch, payload: got.set_result((p, payload)))
    await conn.execute("NOTIFY wire_chan, 'async'")
    assert await asyncio.wait_for(got, 5) == (pid, "async")
    # Cancel: asyncpg sends a CancelRequest when the awaiting task is cancelled by timeout.
    try:
        await conn.fetchval("SELECT pg_sleep(30)", timeout=0.3)
    except asyncio.TimeoutError:
        pass
    assert await conn.fetchval("SELECT 5") == 5
    assert terminate(dsn, pid)
    try:
        await conn.fetchval("SELECT 1")
    except (asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.ConnectionDoesNotExistError) as e:
        assert isinstance(e, asyncpg.exceptions.AdminShutdownError) or conn.is_closed(), e
    else:
        raise AssertionError("asyncpg statement after terminate succeeded")
    assert conn.is_closed()
    # A pool notices and replaces the terminated connection.
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as c:
            first = c.get_server_pid()
        assert terminate(dsn, first)
        await asyncio.sleep(0.2)
        for _ in range(2):
            try:
                async with pool.acquire() as c:
                    assert await c.fetchval("SELECT 9") == 9
                    second = c.get_server_pid()
                    break
            except (asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.ConnectionDoesNotExistError):
                continue
        assert second != first
    finally:
        await pool.close()


def main():
    dsn = sys.argv[1]
    psycopg_pid_and_notify(dsn)
    psycopg_terminate(dsn)
    psycopg_pool_replaces(dsn)
    psycopg_cancel(dsn)
    asyncio.run(asyncpg_checks(dsn))
    print("wire transparency ok")


if __name__ == "__main__":
    main()
