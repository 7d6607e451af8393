// Test harness: a throwaway Postgres database and a real chat-node process.
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
export const NODE_BIN = process.env.CHAT_NODE_BIN ?? join(here, '../../../target/debug/chat-node');
// The server's URL without a database: CHAT_TEST_PG, or the Rust tests' admin URL without its path.
const PG = process.env.CHAT_TEST_PG
  ?? process.env.CHAT_TEST_DATABASE_URL?.replace(/\/[^/]*$/, '')
  ?? 'postgres://postgres@127.0.0.1:5432';
export const SERVICE_KEY = 'js-client-service-key';
const SECRET = 'js-client-test-secret-0123456789';

const children = new Set();
process.on('exit', () => { for (const c of children) try { c.kill('SIGKILL'); } catch { /* gone */ } });

function psql(sql) {
  const r = spawnSync('psql', [`${PG}/postgres`, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { encoding: 'utf8', timeout: 30000 });
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr || r.error}`);
  return r.stdout;
}

export function createDb() {
  const name = `chat_js_${process.pid}_${Math.random().toString(16).slice(2, 10)}`;
  psql(`CREATE DATABASE ${name}`);
  return { name, url: `${PG}/${name}`, drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value, for at most `ms`. */
export async function waitFor(fn, ms = 10000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** Starts a node on `port` (a free one by default) and waits for /readyz. */
export async function startNode({ db, port, env = {} }) {
  port ??= await freePort();
  const log = join(tmpdir(), `chat-js-node-${port}-${process.pid}.log`);
  const fd = openSync(log, 'a');
  const child = spawn(NODE_BIN, [], {
    stdio: ['ignore', fd, fd],
    env: {
      ...process.env,
      CHAT__SERVER__BIND: `127.0.0.1:${port}`,
      CHAT__DATABASE__URL: db.url,
      CHAT__AUTH__JWT_SECRET: SECRET,
      CHAT__API__SERVICE_KEYS: SERVICE_KEY,
      CHAT__BUS__KIND: 'local',
      CHAT__LIMITS__HTTP_WRITES_PER_SEC: '100000',
      CHAT__SERVER__WORKERS: '2',
      CHAT__DATABASE__POOL_SIZE: '4',
      ...env,
    },
  });
  closeSync(fd);
  children.add(child);
  let spawnError = null;
  const exited = new Promise((r) => {
    child.once('exit', r);
    child.once('error', (e) => { spawnError = e; r(); });
  });
  exited.then(() => children.delete(child));
  const url = `http://127.0.0.1:${port}`;
  const node = {
    port, url, log, child,
    async kill() {
      if (!spawnError && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
  try {
    await waitFor(async () => {
      if (spawnError) throw new Error(`cannot run ${NODE_BIN}: ${spawnError.message}`);
      if (child.exitCode !== null) throw new Error(`node exited with ${child.exitCode}`);
      const res = await fetch(`${url}/readyz`).catch(() => null);
      return res?.status === 200;
    }, 30000, 'node ready');
  } catch (e) {
    await node.kill();
    throw new Error(`${e.message}; log:\n${readFileSync(log, 'utf8').slice(-2000)}`);
  }
  return node;
}

/** A service-key call (the company backend's side). */
export async function service(url, method, path, body) {
  const res = await fetch(`${url}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${SERVICE_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

/**
 * A WebSocket class that lets a test watch and tamper with traffic:
 * `tap.sent` holds every frame the client sent, `tap.onSend(frame, ws)` may return false to
 * swallow one, `tap.onReceive(frame)` may return false to drop one, `tap.opened` counts sockets.
 */
export function tap() {
  const t = { sent: [], opened: 0, onSend: null, onReceive: null, WebSocket: null };
  t.WebSocket = class extends globalThis.WebSocket {
    constructor(...args) { super(...args); t.opened++; }
    send(data) {
      const frame = JSON.parse(data);
      t.sent.push(frame);
      if (t.onSend?.(frame, this) === false) return;
      super.send(data);
    }
    get onmessage() { return super.onmessage; }
    set onmessage(fn) {
      super.onmessage = (e) => { if (t.onReceive?.(JSON.parse(e.data)) !== false) fn(e); };
    }
  };
  return t;
}
