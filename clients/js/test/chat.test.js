import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ChatClient, ChatHttp, ChatError, isFatalClose, backoffDelay } from '../src/index.js';
import { createDb, startNode, waitFor, sleep, service, tap } from './harness.js';

let db;
let node;
const clients = [];

before(async () => {
  db = createDb();
  // A short heartbeat: the node closes a socket silent for 2 s, so the client's pings are tested.
  node = await startNode({ db, env: { CHAT__SERVER__HEARTBEAT_S: '1' } });
});

after(async () => {
  for (const c of clients) c.close();
  await node?.kill();
  db?.drop();
});

let n = 0;
async function user() {
  const http = new ChatHttp({ url: node.url });
  const name = `u${process.pid}_${++n}`;
  const { user_id, token } = await http.register(name, 'password-123');
  return { id: user_id, name, token, http };
}

/** A connected client that records what it emits. */
async function client(u, opts = {}) {
  const c = new ChatClient({ url: node.url, token: u.token, backoff: { baseMs: 50, maxMs: 500 }, ...opts });
  clients.push(c);
  c.seen = { message: [], state: [], read: [], unread: [], typing: [], request: [], event: [], error: [], presence: [], joined: [] };
  for (const type of Object.keys(c.seen)) c.on(type, (v) => c.seen[type].push(v));
  c.connect();
  await waitFor(() => c.state === 'online', 10000, 'online');
  await c.sync();
  return c;
}

const bodies = (c, conv) => c.seen.message.filter((m) => m.conv === conv).map((m) => m.body);

function assertInOrder(c, conv) {
  const seqs = c.seen.message.filter((m) => m.conv === conv).map((m) => m.seq);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `seqs in order: ${seqs}`);
  assert.equal(new Set(seqs).size, seqs.length, 'no duplicates');
}

test('register and login', { timeout: 30000 }, async () => {
  const u = await user();
  const http = new ChatHttp({ url: node.url });
  const r = await http.login(u.name, 'password-123');
  assert.equal(r.user_id, u.id);
  assert.equal((await http.me()).username, u.name);
  await assert.rejects(http.login(u.name, 'wrong-password'), (e) => e instanceof ChatError && e.code === 'unauthorized' && e.status === 401);
  await assert.rejects(http.register(u.name, 'password-123'), { code: 'conflict' });
});

test('two clients chat both ways with acks; pings keep the socket open', { timeout: 30000 }, async () => {
  const [ua, ub] = [await user(), await user()];
  const { conversation } = await ua.http.createDirect(ub.id);
  const a = await client(ua);
  const b = await client(ub);
  assert.equal(a.user, ua.id);

  const ack1 = await a.send(conversation.id, 'hello b');
  assert.equal(ack1.seq, 1);
  assert.equal(ack1.conv, conversation.id);
  assert.match(ack1.ts, /Z$/);
  await waitFor(() => b.seen.message.length === 1, 5000, 'b gets the message');
  assert.deepEqual([b.seen.message[0].sender, b.seen.message[0].seq, b.seen.message[0].cid], [ua.id, 1, ack1.cid]);

  const ack2 = await b.send(conversation.id, 'hello a', { tier: 'important' });
  assert.equal(ack2.seq, 2);
  await waitFor(() => a.seen.message.length === 2, 5000, 'a gets the answer');
  assert.deepEqual(bodies(a, conversation.id), ['hello b', 'hello a']);
  assert.deepEqual(bodies(b, conversation.id), ['hello b', 'hello a']);
  assert.equal(a.cursor(conversation.id), 2);

  // Refused sends reject with the contract's code.
  await assert.rejects(a.send(conversation.id, ''), { code: 'bad_request' });
  await assert.rejects(a.send(999999, 'nobody'), { code: 'not_found' });

  // Heartbeat 1 s: a silent socket would be closed after 2 s.
  const states = a.seen.state.length;
  await sleep(3500);
  assert.equal(a.state, 'online');
  assert.equal(a.seen.state.length, states, 'no reconnect');
});

test('a send lost with its connection is resent with the same cid and stored once', { timeout: 30000 }, async () => {
  const [ua, ub] = [await user(), await user()];
  const { conversation } = await ua.http.createDirect(ub.id);
  const t = tap();
  const a = await client(ua, { WebSocket: t.WebSocket });
  const b = await client(ub);
  // The first send goes out, then the socket closes before its ack can come back.
  let cut = false;
  t.onSend = (frame, ws) => {
    if (frame.type === 'send' && !cut) {
      cut = true;
      queueMicrotask(() => ws.close());
    }
  };
  const ack = await a.send(conversation.id, 'once');
  const sends = t.sent.filter((f) => f.type === 'send');
  assert.ok(sends.length >= 2, 'resent after the reconnect');
  assert.ok(sends.every((f) => f.cid === ack.cid), 'same cid');
  assert.ok(t.opened >= 2, 'reconnected');

  const { messages } = await ua.http.history(conversation.id);
  assert.deepEqual(messages.map((m) => [m.seq, m.cid]), [[1, ack.cid]]);
  await waitFor(() => b.seen.message.length === 1, 5000, 'b gets it');
  await sleep(300);
  assert.equal(a.seen.message.length, 1, 'the app saw it once');
  assert.equal(b.seen.message.length, 1);
});

test('a missed push leaves a gap: the client syncs and delivers in order', { timeout: 30000 }, async () => {
  const [ua, ub] = [await user(), await user()];
  const { conversation } = await ua.http.createDirect(ub.id);
  const t = tap();
  const a = await client(ua, { WebSocket: t.WebSocket });
  const b = await client(ub);
  let dropped = 0;
  t.onReceive = (f) => !(f.type === 'msg' && f.body === 'gap-2' && ++dropped === 1);
  const syncsBefore = t.sent.filter((f) => f.type === 'sync').length;
  for (const body of ['gap-1', 'gap-2', 'gap-3', 'gap-4']) await b.send(conversation.id, body);
  await waitFor(() => a.seen.message.length === 4, 5000, 'all four');
  assert.equal(dropped, 1);
  assert.deepEqual(bodies(a, conversation.id), ['gap-1', 'gap-2', 'gap-3', 'gap-4']);
  assertInOrder(a, conversation.id);
  assert.ok(t.sent.filter((f) => f.type === 'sync').length > syncsBefore, 'the gap made it sync');
  assert.equal(a.cursor(conversation.id), 4);

  // A duplicate push (seq at or below the cursor) never reaches the app.
  a._onFrame({ type: 'msg', ...a.seen.message[1] });
  assert.equal(a.seen.message.length, 4);
});

test('typing, read receipts and unread counts', { timeout: 30000 }, async () => {
  const [ua, ub] = [await user(), await user()];
  const { conversation } = await ua.http.createDirect(ub.id);
  const conv = conversation.id;
  const a = await client(ua);
  const b = await client(ub);

  await a.typing(conv);
  await waitFor(() => b.seen.typing.length === 1, 5000, 'typing');
  assert.deepEqual(b.seen.typing[0], { type: 'typing', conv, user: ua.id });

  for (const body of ['one', 'two', 'three']) await a.send(conv, body);
  await waitFor(() => b.seen.message.length === 3, 5000, 'three messages');
  assert.equal((await ub.http.unread()).conversations[conv], 3);

  const r = await b.read(conv, 2);
  assert.deepEqual([r.read_seq, r.unread], [2, 1]);
  await waitFor(() => a.seen.read.some((x) => x.user === ub.id && x.seq === 2), 5000, 'receipt');
  await waitFor(() => b.seen.unread.some((x) => x.conv === conv && x.unread === 1), 5000, 'unread frame');
  await b.read(conv, 3);
  await waitFor(() => b.seen.unread.some((x) => x.conv === conv && x.unread === 0 && x.total === 0), 5000, 'unread 0');
  assert.deepEqual((await ub.http.unread()).conversations, {});
});

test('friend requests and presence', { timeout: 30000 }, async () => {
  const [ua, ub] = [await user(), await user()];
  const a = await client(ua);
  const b = await client(ub);
  const { request } = await ua.http.friendRequest(ub.id, 'hi');
  await waitFor(() => b.seen.request.length === 1, 5000, 'request event');
  assert.equal(b.seen.request[0].kind, 'request');
  assert.equal(b.seen.request[0].request.id, request.id);
  await ub.http.acceptRequest(request.id);
  await waitFor(() => a.seen.request.some((e) => e.kind === 'request_answered'), 5000, 'answer event');
  assert.equal(a.eventsCursor, 2);
  // The node registers a new socket in presence at its next 100 ms tick, so a query right
  // after `hello` may still say offline: poll briefly.
  const presence = await waitFor(async () => {
    const r = await ua.http.presence([ub.id]);
    return r.presence[0]?.online && r.presence;
  }, 3000, 'b online in presence');
  assert.deepEqual(presence.map((p) => [p.user, p.online, p.last_seen]), [[ub.id, true, null]]);
  // Contacts are told when the other goes offline (after the node's grace).
  b.close();
  await waitFor(() => a.seen.presence.some((p) => p.user === ub.id && !p.online), 10000, 'offline presence');
  assert.match(a.seen.presence.at(-1).last_seen, /Z$/);
});

test('seeded cursors and a full sync paged while `more`', { timeout: 30000 }, async () => {
  const [ua, ub] = [await user(), await user()];
  const { conversation } = await ua.http.createDirect(ub.id);
  const conv = conversation.id;
  for (let i = 1; i <= 7; i++) await ua.http.postMessage(conv, { cid: `h-${i}`, body: `m${i}` });

  const t = tap();
  const fresh = await client(ub, { syncLimit: 2, WebSocket: t.WebSocket });
  assert.deepEqual(bodies(fresh, conv), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7']);
  assert.ok(t.sent.filter((f) => f.type === 'sync').length >= 4, 'paged');
  const saved = fresh.getCursors();
  assert.equal(saved.cursors[conv], 7);
  fresh.close();

  await ua.http.postMessage(conv, { cid: 'h-8', body: 'm8' });
  const again = await client(ub, saved);
  await waitFor(() => again.seen.message.length === 1, 5000, 'only the new one');
  assert.deepEqual(bodies(again, conv), ['m8']);
});

test('a bad token, and a backend disconnect, stop reconnecting', { timeout: 30000 }, async () => {
  const t = tap();
  const bad = new ChatClient({ url: node.url, token: 'not-a-token', WebSocket: t.WebSocket, backoff: { baseMs: 10, maxMs: 20 } });
  clients.push(bad);
  const states = [];
  bad.on('state', (s) => states.push(s));
  bad.connect();
  await waitFor(() => bad.state === 'closed', 5000, 'closed');
  await sleep(1000);
  assert.equal(t.opened, 1, 'one attempt only');
  assert.equal(states.at(-1).reason, 'unauthorized');
  assert.deepEqual(states.map((s) => s.state), ['connecting', 'offline', 'closed']);

  const u = await user();
  const t2 = tap();
  const c = await client(u, { WebSocket: t2.WebSocket });
  const r = await service(node.url, 'POST', `/service/users/${u.id}/disconnect`, {});
  assert.equal(r.status, 200);
  await waitFor(() => c.state === 'closed', 5000, 'closed by the backend');
  assert.equal(c.seen.state.at(-1).code, 4003);
  await sleep(500);
  assert.equal(t2.opened, 1);
  // A revoked token closes with 1008; an app that gets a new token connects again.
  c.connect();
  await waitFor(() => c.state === 'online', 5000, 'back online');
  await service(node.url, 'POST', `/service/users/${u.id}/revoke`);
  await waitFor(() => c.state === 'closed', 5000, 'closed on revoke');
  assert.equal(c.seen.state.at(-1).code, 1008);
});

test('groups: joined, system entries, edits, reactions and settings', { timeout: 30000 }, async () => {
  const [ua, ub, uc] = [await user(), await user(), await user()];
  const a = await client(ua);
  const b = await client(ub);
  const c = await client(uc);
  const joinedB = b.seen.joined;
  const settings = [];
  a.on('settings', (s) => settings.push(s));

  const { conversation } = await ua.http.createGroup('team', [ub.id]);
  const conv = conversation.id;
  await waitFor(() => joinedB.length === 1, 5000, 'b joined');
  assert.equal(joinedB[0].conv, conv);

  const { seq } = await a.send(conv, 'first draft');
  await a.edit(conv, seq, 'final');
  await b.react(conv, seq, '👍');
  await ua.http.addMembers(conv, [uc.id]);
  await waitFor(() => c.seen.message.some((m) => m.kind === 'system'), 5000, 'c sees its added entry');
  await waitFor(() => b.seen.message.length >= 4, 5000, 'b has all four entries');
  const kinds = (cl) => cl.seen.message.filter((m) => m.conv === conv).map((m) => m.kind);
  // A group starts with no entry; then the message, the edit, the reaction, the system entry.
  assert.deepEqual(kinds(b), ['text', 'edit', 'reaction', 'system']);
  await waitFor(() => a.seen.message.length >= 4, 5000, 'a has all four');
  assert.deepEqual(kinds(a), ['text', 'edit', 'reaction', 'system']);
  assertInOrder(a, conv);
  const added = b.seen.message.at(-1);
  assert.equal(added.system.action, 'added');
  assert.deepEqual(added.system.users, [uc.id]);
  // c reads from the entry that added it: nothing before.
  assert.deepEqual(kinds(c), ['system']);

  await ua.http.settings(conv, { pinned: true });
  await waitFor(() => settings.length === 1, 5000, 'settings event');
  assert.deepEqual([settings[0].conv, settings[0].pinned], [conv, true]);
});

test('close codes that stop, and capped backoff with full jitter', () => {
  for (const code of [1008, 4000, 4003, 4999]) assert.ok(isFatalClose(code), `${code} stops`);
  for (const code of [1000, 1001, 1002, 1005, 1006, 1009, 1012, 4001]) assert.ok(!isFatalClose(code), `${code} reconnects`);
  const b = { baseMs: 100, maxMs: 5000 };
  assert.equal(backoffDelay(3, b, () => 0.999999) < 800, true);
  assert.equal(backoffDelay(3, b, () => 0), 0);
  assert.ok(backoffDelay(30, b, () => 0.999999) < 5000, 'capped');
  for (let n = 0; n < 40; n++) {
    const d = backoffDelay(n, b);
    assert.ok(d >= 0 && d < Math.min(5000, 100 * 2 ** n));
  }
});
