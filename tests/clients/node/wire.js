#!/usr/bin/env node
// Wire transparency through pgmld as node-postgres sees it (issue #20); runs unchanged
// against plain Postgres.
//
// usage: node tests/clients/node/wire.js DSN
//
// Checks: client.processID equals pg_backend_pid() and the pid of its own NOTIFY;
// pg_terminate_backend(processID) from another session gives the client an 'error'
// event with code 57P01, and a pg.Pool drops the connection ('error' event) and serves
// the next query on a new backend.
// Prints "node-postgres wire ok" and exits 0; any failure prints the error and exits 1.
'use strict';

const assert = require('node:assert/strict');
const { Client, Pool } = require('pg');

function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function terminate(dsn, pid) {
  const other = new Client({ connectionString: dsn });
  await other.connect();
  try {
    const r = await other.query('SELECT pg_terminate_backend($1) AS done', [pid]);
    assert.equal(r.rows[0].done, true, `pg_terminate_backend(${pid}) found no backend`);
  } finally {
    await other.end();
  }
}

async function pidAndNotify(dsn) {
  const client = new Client({ connectionString: dsn });
  await client.connect();
  const pid = client.processID;
  const r = await client.query('SELECT pg_backend_pid() AS pid');
  assert.equal(r.rows[0].pid, pid, 'processID differs from pg_backend_pid()');
  const note = new Promise((resolve) => client.on('notification', resolve));
  await client.query('LISTEN wire_chan');
  await client.query("NOTIFY wire_chan, 'node'");
  const msg = await within(5000, note, 'the notification');
  assert.equal(msg.processId, pid, 'NOTIFY pid differs from processID');
  assert.equal(msg.payload, 'node');
  await client.end();
}

async function terminated(dsn) {
  const client = new Client({ connectionString: dsn });
  const errored = new Promise((resolve) => client.on('error', resolve));
  await client.connect();
  await terminate(dsn, client.processID);
  // Postgres sends the FATAL at once; node-postgres reads it while idle.
  const e = await within(5000, errored, "the client's error event");
  assert.equal(e.code, '57P01', `expected 57P01, got ${e.code} (${e.message})`);
  await assert.rejects(client.query('SELECT 1'));
}

async function poolReplaces(dsn) {
  const pool = new Pool({ connectionString: dsn, max: 1 });
  const lost = new Promise((resolve) => pool.on('error', resolve));
  const c = await pool.connect();
  const first = c.processID;
  c.release();
  await terminate(dsn, first);
  const e = await within(5000, lost, "the pool's error event");
  assert.equal(e.code, '57P01', `expected 57P01, got ${e.code}`);
  const r = await pool.query('SELECT pg_backend_pid() AS pid');
  assert.notEqual(r.rows[0].pid, first, 'pool reused the terminated connection');
  await pool.end();
}

async function main(dsn) {
  await pidAndNotify(dsn);
  await terminated(dsn);
  await poolReplaces(dsn);
  console.log('node-postgres wire ok');
}

main(process.argv[2]).catch((e) => {
  console.error(e);
  process.exit(1);
});
