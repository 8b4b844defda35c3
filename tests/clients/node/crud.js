#!/usr/bin/env node
// node-postgres CRUD check against pgmld (or plain Postgres with CRUD_SKIP_PGML=1).
//
// usage: node tests/clients/node/crud.js DSN
//
// Needs `pg` in tests/clients/node/node_modules (`scripts/setup.sh deps` runs npm ci).
// Prints "node-postgres crud ok" and exits 0; any failure prints the error and exits 1.
'use strict';

const assert = require('node:assert/strict');
const { Client } = require('pg');

const TABLE = 'crud_node';

async function expectCode(client, sql, code, params) {
  let err = null;
  try {
    await client.query(sql, params);
  } catch (e) {
    err = e;
  }
  assert.ok(err, `${sql}: expected an error with code ${code}, got success`);
  assert.equal(err.code, code, `${sql}: expected code ${code}, got ${err.code} (${err.message})`);
  return err;
}

async function main(dsn) {
  const skipPgml = process.env.CRUD_SKIP_PGML === '1';
  const client = new Client({ connectionString: dsn });
  client.on('error', (e) => {
    console.error('client error event:', e);
    process.exitCode = 1;
  });
  await client.connect();
  try {
    // --- setup ---------------------------------------------------------------------------
    await client.query(`DROP TABLE IF EXISTS ${TABLE}`);
    await client.query(
      `CREATE TABLE ${TABLE} (id serial PRIMARY KEY, n int, name text, meta jsonb, blob bytea, ts timestamp)`
    );

    // --- insert with parameters ------------------------------------------------------------
    const rows = [
      { n: 1, name: 'alpha', meta: { k: 1, tags: ['a', 'b'] }, blob: Buffer.from([0, 1, 2]), ts: new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)) },
      { n: -2147483648, name: "d\u00e9lta 'quoted'", meta: { unicode: '\u2603', nested: { x: null } }, blob: Buffer.alloc(0), ts: new Date(Date.UTC(1999, 11, 31, 23, 59, 59)) },
      { n: 2147483647, name: 'gamma', meta: [1, 2, 3], blob: Buffer.from(Array.from({ length: 256 }, (_, i) => i)), ts: new Date(Date.UTC(2030, 5, 15)) },
      { n: null, name: null, meta: null, blob: null, ts: null },
    ];
    const ids = [];
    for (const r of rows) {
      const res = await client.query(
        `INSERT INTO ${TABLE} (n, name, meta, blob, ts) VALUES ($1, $2, $3::jsonb, $4, $5) RETURNING id`,
        [r.n, r.name, r.meta === null ? null : JSON.stringify(r.meta), r.blob, r.ts]
      );
      assert.equal(res.rowCount, 1);
      ids.push(res.rows[0].id);
    }
    assert.equal(new Set(ids).size, rows.length);

    // --- select back ---------------------------------------------------------------------
    const sel = await client.query(
      `SELECT id, n, name, meta, blob, ts FROM ${TABLE} WHERE id = ANY($1::int[]) ORDER BY id`,
      [ids]
    );
    assert.equal(sel.rows.length, rows.length);
    sel.rows.forEach((got, i) => {
      const want = rows[i];
      assert.equal(got.id, ids[i]);
      assert.equal(got.n, want.n);
      assert.equal(got.name, want.name);
      assert.deepEqual(got.meta, want.meta);
      if (want.blob === null) assert.equal(got.blob, null);
      else assert.ok(Buffer.from(got.blob).equals(want.blob), `blob row ${i}`);
      if (want.ts === null) assert.equal(got.ts, null);
      else assert.equal(got.ts.getTime(), want.ts.getTime(), `ts row ${i}`);
    });
    const fields = sel.fields.map((f) => f.name);
    assert.deepEqual(fields, ['id', 'n', 'name', 'meta', 'blob', 'ts']);

    // prepared (named) statement, executed twice
    const named = { name: 'crud_node_by_name', text: `SELECT n FROM ${TABLE} WHERE name = $1`, values: ['alpha'] };
    assert.deepEqual((await client.query(named)).rows, [{ n: 1 }]);
    assert.deepEqual((await client.query({ ...named, values: ['gamma'] })).rows, [{ n: 2147483647 }]);

    // --- update / delete -----------------------------------------------------------------
    const upd = await client.query(`UPDATE ${TABLE} SET n = n + $1, meta = $2 WHERE id = $3`, [10, { updated: true }, ids[0]]);
    assert.equal(upd.rowCount, 1);
    const after = await client.query(`SELECT n, meta FROM ${TABLE} WHERE id = $1`, [ids[0]]);
    assert.deepEqual(after.rows, [{ n: 11, meta: { updated: true } }]);
    const del = await client.query(`DELETE FROM ${TABLE} WHERE id = $1`, [ids[3]]);
    assert.equal(del.rowCount, 1);
    assert.equal((await client.query(`SELECT count(*)::int AS c FROM ${TABLE}`)).rows[0].c, rows.length - 1);

    // --- transaction: error, then ROLLBACK ----------------------------------------------------
    await client.query('BEGIN');
    await client.query(`INSERT INTO ${TABLE} (name) VALUES ($1)`, ['in failed tx']);
    await expectCode(client, 'SELECT 1/0', '22012');
    await expectCode(client, 'SELECT 1', '25P02'); // in failed transaction block
    await client.query('ROLLBACK');
    const gone = await client.query(`SELECT count(*)::int AS c FROM ${TABLE} WHERE name = $1`, ['in failed tx']);
    assert.equal(gone.rows[0].c, 0);

    // committed transaction
    await client.query('BEGIN');
    await client.query(`INSERT INTO ${TABLE} (name, ts) VALUES ($1, $2)`, ['committed', new Date(Date.UTC(2020, 1, 29))]);
    await client.query('COMMIT');
    const kept = await client.query(`SELECT count(*)::int AS c FROM ${TABLE} WHERE name = $1`, ['committed']);
    assert.equal(kept.rows[0].c, 1);

    // error outside a transaction keeps the client usable
    await expectCode(client, 'SELECT * FROM crud_node_missing_table', '42P01');
    assert.deepEqual((await client.query('SELECT $1::int + 1 AS x', [41])).rows, [{ x: 42 }]);

    if (!skipPgml) {
      // --- pgml.* served by pgmld -------------------------------------------------------
      const v = await client.query('SELECT pgml.version() AS v');
      assert.equal(v.rows.length, 1);
      assert.equal(typeof v.rows[0].v, 'string');
      assert.ok(v.rows[0].v.length > 0, 'pgml.version() is empty');

      await expectCode(client, 'SELECT pgml.nope()', '42883');
      assert.deepEqual((await client.query('SELECT 1 AS one')).rows, [{ one: 1 }]);

      const p = await client.query('SELECT pgml.version() AS v, $1::int AS seven', [7]);
      assert.deepEqual(p.rows, [{ v: v.rows[0].v, seven: 7 }]);
    }

    // --- cleanup -------------------------------------------------------------------------
    await client.query(`DROP TABLE ${TABLE}`);
  } finally {
    await client.end();
  }
  console.log('node-postgres crud ok' + (skipPgml ? ' (pgml checks skipped)' : ''));
}

if (process.argv.length !== 3) {
  console.error('usage: node crud.js DSN');
  process.exit(2);
}
main(process.argv[2]).catch((e) => {
  console.error(e);
  process.exit(1);
});
