// ChatClient: one WebSocket to the node, kept open, with the client rules of PROTOCOL.md §9.
import { ChatError, ChatHttp } from './http.js';

/** Close codes after which the client stops: 1008 (token expired or revoked) and the codes
 * a company backend closes with (4000–4999), except 4001 (slow consumer). */
export function isFatalClose(code) {
  return code === 1008 || (code >= 4000 && code <= 4999 && code !== 4001);
}

/** Full jitter: uniform in [0, min(maxMs, baseMs · 2^attempt)). */
export function backoffDelay(attempt, { baseMs, maxMs }, random = Math.random) {
  return random() * Math.min(maxMs, baseMs * 2 ** attempt);
}

const RETRYABLE = new Set(['rate_limited', 'unavailable']);
const MAX_TRIES = 5;

function newCid() {
  return globalThis.crypto?.randomUUID?.() ?? `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * @typedef {'connecting'|'online'|'offline'|'closed'} State
 * @typedef {{conv: number, seq: number, sender: number, cid: string, body: string, kind?: string,
 *   ts: string, tier?: string, reply_to?: number|null, target?: number, [k: string]: any}} Message
 * @typedef {{conv: number, seq: number, ts: string, cid: string}} Ack
 */

export class ChatClient {
  /**
   * @param {object} opts
   * @param {string} opts.url base URL, e.g. `https://chat.example.com` (`ws(s)://…/ws` is derived)
   * @param {string} opts.token user token
   * @param {any} [opts.WebSocket] a WebSocket class; default the global one
   * @param {typeof fetch} [opts.fetch]
   * @param {Record<string, number>} [opts.cursors] conversation id → highest seq the app holds
   * @param {number} [opts.eventsCursor] the app's place in its own event stream
   * @param {{baseMs?: number, maxMs?: number}} [opts.backoff] reconnect delays (full jitter)
   * @param {number} [opts.syncLimit] messages per conversation per sync round (1..500)
   * @param {(code: number) => boolean} [opts.isFatalClose]
   */
  constructor(opts) {
    this.url = opts.url.replace(/\/+$/, '');
    this.WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) throw new Error('no WebSocket: pass opts.WebSocket (Node 20: --experimental-websocket)');
    this.http = new ChatHttp({ url: this.url, token: opts.token, fetch: opts.fetch });
    this.backoff = { baseMs: 500, maxMs: 30000, ...opts.backoff };
    this.syncLimit = opts.syncLimit ?? 100;
    this.isFatalClose = opts.isFatalClose ?? isFatalClose;
    /** @type {Map<number, number>} */
    this.cursors = new Map(Object.entries(opts.cursors ?? {}).map(([k, v]) => [Number(k), Number(v)]));
    this.eventsCursor = opts.eventsCursor ?? 0;
    /** @type {State} */
    this.state = 'closed';
    /** the user id, from `hello` */
    this.user = null;
    this._listeners = new Map();
    this._pending = new Map(); // cid → {frame, resolve, reject, promise, tries}
    this._held = new Map(); // conv → Map(seq → message) kept aside above a hole
    this._attempt = 0;
    this._stopped = true;
    this._ws = null;
  }

  get token() { return this.http.token; }
  /** A new token (after a 1008 close, say); call `connect()` again to use it on the socket. */
  setToken(token) { this.http.token = token; }

  // Events -----------------------------------------------------------------------------

  /** Subscribe; returns a function that unsubscribes. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this._listeners.get(type).delete(fn);
  }

  _emit(type, value) {
    for (const fn of this._listeners.get(type) ?? []) {
      try { fn(value); } catch (e) { queueMicrotask(() => { throw e; }); }
    }
  }

  _setState(state, info = {}) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', { state, ...info });
  }

  // Connection ---------------------------------------------------------------------------

  /** Opens the socket, and keeps it open until `close()` or a fatal close code. */
  connect() {
    this._stopped = false;
    this._attempt = 0;
    clearTimeout(this._retryTimer);
    if (!this._ws) this._open();
  }

  /** Stops for good: closes the socket and rejects every unacked send with `closed`. */
  close() {
    this._stopped = true;
    clearTimeout(this._retryTimer);
    this._teardown(1000);
    for (const p of this._pending.values()) p.reject(new ChatError('closed', 'client closed'));
    this._pending.clear();
    this._setState('closed');
  }

  _open() {
    this._setState('connecting');
    const base = this.url.replace(/^http/, 'ws');
    const ws = new this.WebSocket(`${base}/ws?token=${encodeURIComponent(this.token)}`);
    let opened = false;
    this._ws = ws;
    ws.onopen = () => { opened = true; };
    // Some implementations (Node 20's) report a refused handshake by `error` alone.
    ws.onerror = () => { if (this._ws === ws && !opened) this._onClose(1006, 'handshake failed', false); };
    ws.onmessage = (e) => {
      if (this._ws !== ws) return;
      this._lastRecv = Date.now();
      let frame;
      try { frame = JSON.parse(e.data); } catch { return; }
      this._onFrame(frame);
    };
    ws.onclose = (e) => { if (this._ws === ws) this._onClose(e.code, e.reason, opened); };
    // A socket that never says `hello` is as good as closed.
    this._helloTimer = setTimeout(() => { if (this._ws === ws) this._onClose(1006, 'no hello', opened); }, 20000);
  }

  _teardown(code) {
    clearInterval(this._pinger);
    clearTimeout(this._helloTimer);
    const ws = this._ws;
    this._ws = null;
    if (this._syncWait) this._syncWait.reject(new ChatError('offline', 'connection lost'));
    if (ws) try { ws.close(code); } catch { /* already closing */ }
  }

  async _onClose(code, reason, opened) {
    this._teardown();
    if (this._stopped) return;
    if (this.isFatalClose(code)) return this._fail({ code, reason });
    this._setState('offline', { code, reason });
    if (!opened) {
      // The handshake was refused or the node is unreachable: a refused token must not loop.
      try { await this.http.me(); } catch (e) {
        if (e.status === 401 || e.status === 403) return this._fail({ code, reason: e.code, error: e });
      }
      if (this._stopped) return;
    }
    const delay = backoffDelay(this._attempt++, this.backoff);
    this._retryTimer = setTimeout(() => { if (!this._stopped && !this._ws) this._open(); }, delay);
  }

  _fail(info) {
    this._stopped = true;
    this._setState('closed', info);
  }

  _sendFrame(frame) {
    if (this.state !== 'online' || !this._ws) return false;
    try { this._ws.send(JSON.stringify(frame)); return true; } catch { return false; }
  }

  _startHeartbeat(seconds) {
    const every = Math.max(1, seconds) * 1000;
    clearInterval(this._pinger);
    this._pinger = setInterval(() => {
      if (Date.now() - this._lastRecv > 2.5 * every) {
        // Nothing heard for too long, not even a pong: treat the socket as dead.
        this._onClose(1006, 'no answer', true);
      } else {
        this._sendFrame({ type: 'ping' });
      }
    }, every);
  }

  // Frames -------------------------------------------------------------------------------

  _onFrame(f) {
    switch (f.type) {
      case 'hello':
        clearTimeout(this._helloTimer);
        this.user = f.user;
        this._attempt = 0;
        this._setState('online', { node: f.node });
        this._startHeartbeat(f.heartbeat_s ?? 30);
        for (const p of this._pending.values()) this._sendFrame(p.frame); // same cid
        this._syncSoon();
        break;
      case 'ack': {
        const p = this._pending.get(f.cid);
        if (!p) break;
        this._pending.delete(f.cid);
        this._accept(ownEntry(p.frame, f, this.user));
        p.resolve({ conv: f.conv, seq: f.seq, ts: f.ts, cid: f.cid });
        break;
      }
      case 'error': {
        const err = new ChatError(f.code, f.message);
        const p = f.ref !== undefined && this._pending.get(f.ref);
        if (p) {
          if (RETRYABLE.has(f.code) && ++p.tries < MAX_TRIES) {
            setTimeout(() => this._pending.get(f.ref) === p && this._sendFrame(p.frame), 500 * 2 ** p.tries);
          } else {
            this._pending.delete(f.ref);
            p.reject(err);
          }
        } else if (f.ref === 'sync' && this._syncWait) {
          this._syncWait.reject(err);
        } else {
          err.ref = f.ref;
          this._emit('error', err);
        }
        break;
      }
      case 'msg': {
        const { type, ...m } = f;
        this._accept(m);
        break;
      }
      case 'sync':
        this._syncWait?.resolve(f);
        break;
      case 'resync':
        this._syncSoon();
        break;
      case 'joined':
        this._emit('joined', f);
        this._syncSoon();
        break;
      case 'contact':
        this._event(f.event, true);
        break;
      case 'left': case 'read': case 'unread': case 'typing': case 'presence':
        this._emit(f.type, f);
        break;
      default: // pong, and frames of later versions
        break;
    }
  }

  // Ordering: a message reaches the app once, in seq order -------------------------------

  /** The highest seq delivered to the app in a conversation (0 if none). */
  cursor(conv) { return this.cursors.get(conv) ?? 0; }

  /** Cursors to persist; pass them back as the constructor's `cursors` and `eventsCursor`. */
  getCursors() {
    return { cursors: Object.fromEntries(this.cursors), eventsCursor: this.eventsCursor };
  }

  _accept(m) {
    const cur = this.cursor(m.conv);
    if (m.seq <= cur) return; // held already
    if (m.seq > cur + 1) {
      // A hole below: keep it aside until sync fills the hole.
      if (!this._held.has(m.conv)) this._held.set(m.conv, new Map());
      this._held.get(m.conv).set(m.seq, m);
      this._syncSoon();
      return;
    }
    this._deliver(m);
    this._drain(m.conv);
  }

  _deliver(m) {
    this.cursors.set(m.conv, m.seq);
    this._emit('message', m);
  }

  _drain(conv) {
    const held = this._held.get(conv);
    if (!held) return;
    for (const seq of held.keys()) if (seq <= this.cursor(conv)) held.delete(seq);
    let next;
    while ((next = held.get(this.cursor(conv) + 1))) {
      held.delete(next.seq);
      this._deliver(next);
    }
    if (!held.size) this._held.delete(conv);
  }

  _event(e, live) {
    if (e.seq <= this.eventsCursor) return;
    if (live && e.seq !== this.eventsCursor + 1) { this._syncSoon(); return; }
    this.eventsCursor = e.seq;
    this._emit('event', e);
    const kind = e.event?.kind;
    if (kind === 'request' || kind === 'request_answered') this._emit('request', e.event);
    else if (kind === 'settings') this._emit('settings', e.event);
  }

  // Sync ---------------------------------------------------------------------------------

  /** Syncs every conversation from its cursor, round after round while the answer says `more`.
   * Resolves when caught up; rejects with `offline` when there is no socket. */
  sync() {
    if (this._syncing) { this._syncAgain = true; return this._syncing; }
    this._syncing = (async () => {
      try {
        let more;
        do {
          this._syncAgain = false;
          const answer = await this._syncRound();
          this._applySync(answer);
          more = answer.more;
        } while (more || this._syncAgain);
      } finally {
        this._syncing = null;
      }
    })();
    return this._syncing;
  }

  _syncRound() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(reject, new ChatError('timeout', 'no sync answer')), 30000);
      const done = (fn, v) => { clearTimeout(timer); this._syncWait = null; fn(v); };
      this._syncWait = { resolve: (v) => done(resolve, v), reject: (e) => done(reject, e) };
      const frame = { type: 'sync', cursors: Object.fromEntries(this.cursors), limit: this.syncLimit, events_cursor: this.eventsCursor };
      if (!this._sendFrame(frame)) done(reject, new ChatError('offline', 'not connected'));
    });
  }

  _syncSoon() {
    if (this.state !== 'online') return;
    this.sync().catch((e) => {
      if (e.code !== 'offline') setTimeout(() => this._syncSoon(), 1000);
    });
  }

  _applySync(answer) {
    for (const c of answer.conversations) {
      for (const m of c.messages) if (m.seq > this.cursor(c.id)) this._deliver(m);
      // Fewer than asked: everything up to last_seq came or has expired (§9.3).
      if (c.messages.length < this.syncLimit && c.last_seq > this.cursor(c.id)) this.cursors.set(c.id, c.last_seq);
      this._drain(c.id);
    }
    for (const e of answer.events ?? []) this._event(e, false);
    // Never back: a live `contact` frame may have overtaken this answer.
    this.eventsCursor = Math.max(this.eventsCursor, answer.events_cursor ?? 0);
    this._emit('synced', answer.conversations.map(({ messages, ...c }) => c));
  }

  // Calls ------------------------------------------------------------------------------

  /**
   * Sends a message. Resolves with the ack once it is stored; rejects with the error frame's
   * code. Survives reconnects: resent with the same cid until acked or refused.
   * @param {number} conv @param {string} body
   * @param {{cid?: string, tier?: string, reply_to?: number, kind?: string, attach?: object, mentions?: number[]}} [opts]
   * @returns {Promise<Ack>}
   */
  send(conv, body, opts = {}) {
    return this._request({ type: 'send', conv, body, ...opts, cid: opts.cid ?? newCid() });
  }
  edit(conv, target, body, opts = {}) { return this._request({ type: 'edit', conv, target, body, cid: opts.cid ?? newCid() }); }
  recall(conv, target, opts = {}) { return this._request({ type: 'recall', conv, target, cid: opts.cid ?? newCid() }); }
  react(conv, target, emoji, on = true, opts = {}) {
    return this._request({ type: 'react', conv, target, emoji, on, cid: opts.cid ?? newCid() });
  }

  /** Sends left unacked (to show them as pending). */
  pending() { return [...this._pending.values()].map((p) => p.frame); }

  _request(frame) {
    const known = this._pending.get(frame.cid);
    if (known) return known.promise;
    const p = { frame, tries: 0 };
    p.promise = new Promise((resolve, reject) => { p.resolve = resolve; p.reject = reject; });
    this._pending.set(frame.cid, p);
    this._sendFrame(frame); // else sent after the next hello
    return p.promise;
  }

  /** Tells the other members you are typing. Resolves once sent; rejects when offline. */
  async typing(conv) {
    if (!this._sendFrame({ type: 'typing', conv })) throw new ChatError('offline', 'not connected');
  }

  /** Moves your read cursor (over HTTP, for a definite answer `{read_seq, unread, …}`). */
  read(conv, seq) { return this.http.read(conv, seq); }
}

/** The entry an ack stands for, as the app would have received it from a push. */
function ownEntry(frame, ack, sender) {
  const { type, ...f } = frame;
  const base = { conv: ack.conv, seq: ack.seq, ts: ack.ts, cid: ack.cid, sender };
  if (type === 'send') return { kind: 'text', reply_to: null, attach: null, ...f, ...base };
  if (type === 'edit') return { kind: 'edit', target: f.target, body: f.body, ...base };
  if (type === 'recall') return { kind: 'recall', target: f.target, body: '', ...base };
  return { kind: 'reaction', target: f.target, body: '', reaction: { emoji: f.emoji, on: f.on }, ...base };
}
