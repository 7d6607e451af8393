// A small wrapper over the node's HTTP API (/api/v1). No dependencies: it uses `fetch`.

/** An error of the API: `code` is the contract's error code (`not_member`, `rate_limited`, …),
 * or `network` when the node could not be reached, or `closed` / `offline` from the client. */
export class ChatError extends Error {
  /** @param {string} code @param {string} [message] @param {number} [status] HTTP status, 0 if none */
  constructor(code, message, status = 0) {
    super(message || code);
    this.name = 'ChatError';
    this.code = code;
    this.status = status;
  }
}

const enc = encodeURIComponent;

/** @param {Record<string, any>} params */
function query(params) {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `${enc(k)}=${enc(String(v))}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

export class ChatHttp {
  /**
   * @param {object} opts
   * @param {string} opts.url base URL of the node or load balancer, e.g. `https://chat.example.com`
   * @param {string} [opts.token] user token (set by `login` and `register` too)
   * @param {typeof fetch} [opts.fetch]
   * @param {number} [opts.timeoutMs] per request, default 15000
   */
  constructor({ url, token, fetch: fetchImpl, timeoutMs = 15000 }) {
    this.url = url.replace(/\/+$/, '');
    this.token = token;
    this.timeoutMs = timeoutMs;
    this._fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * One call. Resolves with the parsed JSON answer; rejects with a {@link ChatError}.
   * @param {string} method @param {string} path under /api/v1 @param {any} [body]
   */
  async request(method, path, body) {
    const headers = { accept: 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await this._fetch(`${this.url}/api/v1${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new ChatError('network', String(e?.message ?? e));
    }
    const text = await res.text().catch(() => '');
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    if (!res.ok) {
      throw new ChatError(data?.error?.code ?? `http_${res.status}`, data?.error?.message ?? res.statusText, res.status);
    }
    return data;
  }

  // Accounts and users
  /** @returns {Promise<{user_id: number, token: string}>} and keeps the token */
  async register(username, password, displayName) {
    const r = await this.request('POST', '/auth/register', { username, password, display_name: displayName });
    this.token = r.token;
    return r;
  }
  /** @returns {Promise<{user_id: number, token: string}>} and keeps the token */
  async login(username, password) {
    const r = await this.request('POST', '/auth/login', { username, password });
    this.token = r.token;
    return r;
  }
  me() { return this.request('GET', '/me'); }
  /** @param {{display_name?: string, avatar_url?: string|null}} changes */
  updateMe(changes) { return this.request('PATCH', '/me', changes); }
  searchUsers(q) { return this.request('GET', `/users${query({ q })}`); }
  user(id) { return this.request('GET', `/users/${id}`); }

  // Conversations
  /** @param {{limit?: number, before?: string}} [page] */
  conversations(page = {}) { return this.request('GET', `/conversations${query(page)}`); }
  createDirect(peer, opts = {}) { return this.request('POST', '/conversations', { kind: 'direct', peer, ...opts }); }
  createGroup(title, members, opts = {}) { return this.request('POST', '/conversations', { kind: 'group', title, members, ...opts }); }
  /** One page of history, ascending. @param {{before_seq?: number, limit?: number}} [page] */
  history(conv, page = {}) { return this.request('GET', `/conversations/${conv}/messages${query(page)}`); }
  /** Send over HTTP (the WebSocket `send` of ChatClient is the usual way). */
  postMessage(conv, message) { return this.request('POST', `/conversations/${conv}/messages`, message); }
  edit(conv, seq, body, cid) { return this.request('PATCH', `/conversations/${conv}/messages/${seq}`, { cid, body }); }
  recall(conv, seq, cid) { return this.request('DELETE', `/conversations/${conv}/messages/${seq}${query({ cid })}`); }
  react(conv, seq, emoji, on, cid) {
    return this.request(on ? 'PUT' : 'DELETE', `/conversations/${conv}/messages/${seq}/reactions/${enc(emoji)}${query({ cid })}`);
  }
  read(conv, seq) { return this.request('POST', `/conversations/${conv}/read`, { seq }); }
  unread() { return this.request('GET', '/unread'); }
  sync(cursors, opts = {}) { return this.request('POST', '/sync', { cursors, ...opts }); }
  /** @param {{muted_until?: string|null, pinned?: boolean, archived?: boolean}} settings */
  settings(conv, settings) { return this.request('PUT', `/conversations/${conv}/settings`, settings); }

  // Groups
  addMembers(conv, users) { return this.request('POST', `/conversations/${conv}/members`, { users }); }
  removeMember(conv, user) { return this.request('DELETE', `/conversations/${conv}/members/${user}`); }
  leave(conv) { return this.request('POST', `/conversations/${conv}/leave`); }
  rename(conv, title) { return this.request('PATCH', `/conversations/${conv}`, { title }); }
  setRole(conv, user, role) { return this.request('PUT', `/conversations/${conv}/members/${user}/role`, { role }); }

  // Contacts
  contacts() { return this.request('GET', '/contacts'); }
  friendRequest(user, note) { return this.request('POST', '/contacts/requests', { user, note }); }
  acceptRequest(id) { return this.request('POST', `/contacts/requests/${id}/accept`); }
  declineRequest(id) { return this.request('POST', `/contacts/requests/${id}/decline`); }
  cancelRequest(id) { return this.request('POST', `/contacts/requests/${id}/cancel`); }
  unfriend(user) { return this.request('DELETE', `/contacts/${user}`); }
  block(user) { return this.request('PUT', `/blocks/${user}`); }
  unblock(user) { return this.request('DELETE', `/blocks/${user}`); }

  // Presence
  /** @param {number[]} users at most 200 */
  presence(users) { return this.request('POST', '/presence', { users }); }
}
