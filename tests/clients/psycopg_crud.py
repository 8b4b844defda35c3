#!/usr/bin/env python3
"""psycopg 3 CRUD check against pgmld (or plain Postgres with CRUD_SKIP_PGML=1).

usage: python3 tests/clients/psycopg_crud.py DSN

Needs psycopg from .deps/python (PYTHONPATH; `scripts/setup.sh deps` installs it).
Prints "psycopg crud ok" and exits 0; any failure raises (traceback, non-zero exit).
"""

import os
import sys

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb

TABLE = "crud_py"


def expect_sqlstate(conn, sql, sqlstate, params=None):
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            cur.fetchall()
    except psycopg.Error as e:
        got = e.sqlstate
        assert got == sqlstate, f"{sql!r}: expected sqlstate {sqlstate}, got {got} ({e})"
        conn.rollback()
        return e
    raise AssertionError(f"{sql!r}: expected an error with sqlstate {sqlstate}, got success")


def main(dsn: str) -> None:
    skip_pgml = os.environ.get("CRUD_SKIP_PGML") == "1"

    with psycopg.connect(dsn, autocommit=False) as conn:
        assert not conn.autocommit
        cur = conn.cursor()

        # --- setup -------------------------------------------------------------------------
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(
            f"CREATE TABLE {TABLE} (id serial PRIMARY KEY, name text, score float8, "
            "meta jsonb, blob bytea)"
        )
        conn.commit()

        # --- insert with parameters ----------------------------------------------------------
        rows = [
            ("alpha", 1.5, {"k": 1, "tags": ["a", "b"]}, b"\x00\x01\x02"),
            ("beta", -2.25, {"k": 2, "nested": {"x": None}}, b"\xff\xfe"),
            ("gamma", 0.0, [1, 2, 3], b""),
            ("d\u00e9lta 'quoted'", 1e-300, {"unicode": "\u2603"}, bytes(range(256))),
            (None, None, None, None),
        ]
        ids = []
        for name, score, meta, blob in rows:
            cur.execute(
                f"INSERT INTO {TABLE} (name, score, meta, blob) VALUES (%s, %s, %s, %s) RETURNING id",
                (name, score, Jsonb(meta) if meta is not None else None, blob),
            )
            (new_id,) = cur.fetchone()
            ids.append(new_id)
        assert len(set(ids)) == len(rows), ids
        cur.executemany(
            f"INSERT INTO {TABLE} (name, score) VALUES (%s, %s)",
            [(f"bulk{i}", float(i)) for i in range(10)],
        )
        conn.commit()

        # --- select back ---------------------------------------------------------------------
        cur.execute(f"SELECT id, name, score, meta, blob FROM {TABLE} WHERE id = ANY(%s) ORDER BY id", (ids,))
        got = cur.fetchall()
        assert len(got) == len(rows), got
        for (gid, gname, gscore, gmeta, gblob), want_id, (name, score, meta, blob) in zip(got, ids, rows):
            assert gid == want_id, (gid, want_id)
            assert gname == name, (gname, name)
            assert gscore == score, (gscore, score)
            assert gmeta == meta, (gmeta, meta)
            assert (bytes(gblob) if gblob is not None else None) == blob, (gblob, blob)

        cur.execute(f"SELECT count(*) FROM {TABLE} WHERE name LIKE %s", ("bulk%",))
        assert cur.fetchone() == (10,)
        cur.execute(f"SELECT name FROM {TABLE} WHERE score > %s AND name IS NOT NULL ORDER BY score DESC LIMIT %s", (5.5, 2))
        assert cur.fetchall() == [("bulk9",), ("bulk8",)]

        # --- update ------------------------------------------------------------------------
        cur.execute(
            f"UPDATE {TABLE} SET score = score * 2, meta = %s WHERE id = %s",
            (Jsonb({"updated": True}), ids[0]),
        )
        assert cur.rowcount == 1, cur.rowcount
        conn.commit()
        cur.execute(f"SELECT score, meta FROM {TABLE} WHERE id = %s", (ids[0],))
        assert cur.fetchone() == (3.0, {"updated": True})

        # --- delete ------------------------------------------------------------------------
        cur.execute(f"DELETE FROM {TABLE} WHERE name LIKE %s", ("bulk%",))
        assert cur.rowcount == 10, cur.rowcount
        conn.commit()
        cur.execute(f"SELECT count(*) FROM {TABLE}")
        assert cur.fetchone() == (len(rows),)

        # --- server-side (named) cursor --------------------------------------------------------
        with conn.cursor(name="crud_py_named") as scur:
            scur.itersize = 2
            scur.execute(f"SELECT id, name FROM {TABLE} ORDER BY id")
            first = scur.fetchmany(2)
            rest = scur.fetchall()
        assert [r[0] for r in first + rest] == ids, (first, rest)
        assert first[0][1] == "alpha"
        conn.commit()

        # --- binary results --------------------------------------------------------------------
        with conn.cursor(binary=True) as bcur:
            bcur.execute(
                f"SELECT id, name, score, meta, blob FROM {TABLE} WHERE id = %s", (ids[3],)
            )
            bid, bname, bscore, bmeta, bblob = bcur.fetchone()
        assert bid == ids[3]
        assert bname == rows[3][0]
        assert bscore == rows[3][1]
        assert bmeta == rows[3][2]
        assert bytes(bblob) == rows[3][3]
        conn.commit()

        # --- rollback discards an insert ---------------------------------------------------------
        cur.execute(f"INSERT INTO {TABLE} (name) VALUES (%s)", ("rolled back",))
        cur.execute(f"SELECT count(*) FROM {TABLE} WHERE name = %s", ("rolled back",))
        assert cur.fetchone() == (1,)
        conn.rollback()
        cur.execute(f"SELECT count(*) FROM {TABLE} WHERE name = %s", ("rolled back",))
        assert cur.fetchone() == (0,)
        conn.commit()

        # --- errors keep the connection usable ------------------------------------------------
        expect_sqlstate(conn, "SELECT * FROM crud_py_missing_table", "42P01")
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)

        if not skip_pgml:
            # --- pgml.* served by pgmld ---------------------------------------------------------
            cur.execute("SELECT pgml.version()")
            (version,) = cur.fetchone()
            assert isinstance(version, str) and version, version
            conn.commit()

            e = expect_sqlstate(conn, "SELECT pgml.nope()", "42883")
            assert isinstance(e, errors.UndefinedFunction), type(e)
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)
            conn.commit()

            cur.execute("SELECT pgml.version(), %s::int", (7,))
            v2, seven = cur.fetchone()
            assert v2 == version, (v2, version)
            assert seven == 7, seven
            conn.commit()

        # --- cleanup ---------------------------------------------------------------------------
        cur.execute(f"DROP TABLE {TABLE}")
        conn.commit()

    print("psycopg crud ok" + (" (pgml checks skipped)" if skip_pgml else ""))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} DSN", file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
