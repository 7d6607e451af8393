import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { ChatClient, ChatHttp } from '../src/index.js';
import { createDb, startNode, waitFor, sleep } from './harness.js';

let db;
let node;
const clients = [];

after(async () => {
  for (const c of clients) c.close();
  await node?.kill();
  db?.drop();
});

test('a node restart while the other user sends: every message reaches the app once, in order', { timeout: 90000 }, async () => {
  db = createDb();
  node = await startNode({ db });
  const { port, url } = node;
  const reg = async (name) => {
    const http = new ChatHttp({ url });
    const r = await http.register(`${name}_${process.pid}`, 'password-123');
    return { ...r, http };
  };
  const [ua, ub] = [await reg('ra'), await reg('rb')];
  const { conversation } = await ua.http.createDirect(ub.user_id);
  const conv = conversation.id;

  const mk = (u) => {
    const c = new ChatClient({ url, token: u.token, backoff: { baseMs: 100, maxMs: 1000 } });
    clients.push(c);
    c.states = [];
    c.on('state', (s) => c.states.push(s.state));
    c.connect();
    return c;
  };
  const a = mk(ua);
  const b = mk(ub);
  const got = [];
  a.on('message', (m) => got.push(m));
  await waitFor(() => a.state === 'online' && b.state === 'online', 10000, 'both online');

  const acks = [];
  for (let i = 1; i <= 5; i++) acks.push(await b.send(conv, `r${i}`));

  await node.kill();
  await waitFor(() => a.state !== 'online' && b.state !== 'online', 5000, 'both see the node go');
  // Sent while the node is down: kept and sent once it is back.
  const queued = [];
  for (let i = 6; i <= 10; i++) queued.push(b.send(conv, `r${i}`));
  await sleep(500);

  node = await startNode({ db, port });
  // While a may still be waiting to reconnect, more arrive over HTTP and over the socket.
  for (let i = 11; i <= 13; i++) await ub.http.postMessage(conv, { cid: `http-${i}`, body: `r${i}` });
  acks.push(...(await Promise.all(queued)));
  for (let i = 14; i <= 20; i++) acks.push(await b.send(conv, `r${i}`));

  await waitFor(() => got.length >= 20, 20000, 'all twenty at a');
  await sleep(500);
  assert.deepEqual(got.map((m) => m.seq), Array.from({ length: 20 }, (_, i) => i + 1));
  // The HTTP sends may be stored before b's queued ones: the order is the node's, by seq.
  const expected = [...Array(20).keys()].map((i) => `r${i + 1}`);
  assert.deepEqual(got.map((m) => m.body).sort(), expected.sort());
  assert.ok(a.states.includes('offline') && a.states.at(-1) === 'online', `a reconnected: ${a.states}`);

  const { messages } = await ua.http.history(conv, { limit: 100 });
  assert.deepEqual(messages.map((m) => m.body), got.map((m) => m.body), 'stored once each, in the order the app saw');
  assert.equal(new Set(messages.map((m) => m.cid)).size, 20);
});
