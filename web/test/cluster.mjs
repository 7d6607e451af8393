// A throwaway cluster for the browser test: a Postgres database, a redis-server, chat-node
// processes and HAProxy in front of them. Everything started here is stopped by `stop()`,
// and killed on exit in any case.
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const NODE_BIN = process.env.CHAT_NODE_BIN ?? 'target/debug/chat-node';
const ADMIN_URL = process.env.CHAT_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const SERVICE_KEY = 'web-test-service-key';
const SECRET = 'web-test-jwt-secret-0123456789abcdef';

const children = new Set();
process.on('exit', () => { for (const c of children) try { c.kill('SIGKILL'); } catch { /* gone */ } });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(fn, ms, what) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try { const v = await fn(); if (v) return v; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await sleep(50);
  }
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

function psql(sql) {
  const r = spawnSync('psql', [ADMIN_URL, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { encoding: 'utf8', timeout: 30000 });
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr || r.error}`);
}

function dbUrl(name) {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Starts a process with its output in `log`; resolves the handle at once. */
function run(cmd, args, { log, env }) {
  const fd = openSync(log, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: { ...process.env, ...env } });
  closeSync(fd);
  children.add(child);
  const exited = new Promise((r) => { child.once('exit', r); child.once('error', r); });
  exited.then(() => children.delete(child));
  return {
    child, log, exited,
    alive: () => child.exitCode === null && child.signalCode === null,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await Promise.race([exited, sleep(5000)]);
    },
  };
}

const tail = (file) => { try { return readFileSync(file, 'utf8').slice(-2000); } catch { return ''; } };

export class Cluster {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'chat-web-'));
    this.nodes = [];
    this.db = null;
  }

  async start(nodeCount = 2) {
    const name = `chat_web_${process.pid}_${Math.random().toString(16).slice(2, 10)}`;
    psql(`CREATE DATABASE ${name}`);
    this.db = name;
    const redisPort = await freePort();
    this.redis = run('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { log: join(this.dir, 'redis.log') });
    this.redisUrl = `redis://127.0.0.1:${redisPort}`;
    await waitFor(() => portOpen(redisPort), 10000, 'redis-server');
    for (let i = 1; i <= nodeCount; i++) this.nodes.push(await this.startNode(`node-${i}`));
    this.haproxyPort = await freePort();
    const cfg = join(this.dir, 'haproxy.cfg');
    writeFileSync(cfg, haproxyConfig(this.haproxyPort, this.nodes));
    this.haproxy = run('haproxy', ['-db', '-f', cfg], { log: join(this.dir, 'haproxy.log') });
    this.url = `http://127.0.0.1:${this.haproxyPort}`;
    await waitFor(async () => {
      if (!this.haproxy.alive()) throw new Error(`haproxy exited: ${tail(this.haproxy.log)}`);
      // Both backends up: every node answers through the proxy.
      const seen = new Set();
      for (let i = 0; i < 6; i++) {
        const r = await fetch(`${this.url}/readyz`).catch(() => null);
        if (r?.status === 200) seen.add((await r.json()).node);
      }
      return seen.size === nodeCount;
    }, 20000, 'haproxy with every node up');
    return this;
  }

  async startNode(id) {
    const port = await freePort();
    const node = run(NODE_BIN, [], {
      log: join(this.dir, `${id}.log`),
      env: {
        CHAT__SERVER__BIND: `127.0.0.1:${port}`,
        CHAT__NODE__ID: id,
        CHAT__DATABASE__URL: dbUrl(this.db),
        CHAT__BUS__KIND: 'redis',
        CHAT__REDIS__URL: this.redisUrl,
        CHAT__AUTH__JWT_SECRET: SECRET,
        CHAT__API__SERVICE_KEYS: SERVICE_KEY,
        CHAT__LIMITS__HTTP_WRITES_PER_SEC: '100000',
        CHAT__PRESENCE__LEASE: '3s',
        CHAT__SERVER__WORKERS: '2',
        CHAT__DATABASE__POOL_SIZE: '4',
        RUST_LOG: process.env.RUST_LOG ?? 'warn',
      },
    });
    Object.assign(node, { id, port, url: `http://127.0.0.1:${port}` });
    await waitFor(async () => {
      if (!node.alive()) throw new Error(`${id} exited: ${tail(node.log)}`);
      const r = await fetch(`${node.url}/readyz`).catch(() => null);
      return r?.status === 200;
    }, 30000, `${id} ready`);
    return node;
  }

  node(id) { return this.nodes.find((n) => n.id === id); }

  /** A call through HAProxy; `token` a user token or the service key. */
  async api(method, path, { token = SERVICE_KEY, body } = {}) {
    const res = await fetch(`${this.url}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10000),
    });
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(data)}`);
    return data;
  }

  /** The nodes holding the user's sockets. */
  async sessions(userId) {
    const { sessions } = await this.api('GET', `/service/users/${userId}/sessions`);
    return sessions.map((s) => s.node);
  }

  /** Kills every process at once and drops the database, synchronously: for a signal. */
  abort() {
    for (const c of children) try { c.kill('SIGKILL'); } catch { /* gone */ }
    this.dropDb();
  }

  dropDb() {
    if (!this.db) return;
    const name = this.db;
    this.db = null;
    try { psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`); } catch (e) { console.error(e.message); }
  }

  stop(opts) {
    this._stopped ??= this._stop(opts);
    return this._stopped;
  }

  async _stop({ keepLogs = false } = {}) {
    await Promise.all([...this.nodes.map((n) => n.kill()), this.haproxy?.kill(), this.redis?.kill()]);
    this.dropDb();
    if (keepLogs) {
      const out = join('.run', 'web', 'logs');
      mkdirSync(out, { recursive: true });
      for (const f of ['node-1.log', 'node-2.log', 'haproxy.log', 'redis.log']) {
        try { writeFileSync(join(out, f), readFileSync(join(this.dir, f))); } catch { /* absent */ }
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function portOpen(port) {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

/** leastconn over the nodes, health-checked on /readyz, with WebSocket tunnels kept an hour
 * (as config/haproxy.cfg). Each page is moved to its node by the test, which reads where its
 * socket landed (GET /service/users/{id}/sessions) and reloads until the two differ. */
function haproxyConfig(port, nodes) {
  return `global
    log stdout format raw local0 warning

defaults
    mode http
    log global
    option dontlognull
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout client-fin 2s
    timeout server-fin 2s
    timeout tunnel 1h
    timeout http-request 10s
    timeout http-keep-alive 2s
    timeout queue 5s

frontend chat
    bind 127.0.0.1:${port}
    default_backend chat_nodes

backend chat_nodes
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 2
${nodes.map((n) => `    server ${n.id} 127.0.0.1:${n.port}`).join('\n')}
`;
}
