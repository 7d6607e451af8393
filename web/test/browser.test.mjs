// The web page in a real browser: alice and bob each in a Chromium context, on different
// nodes of a two-node cluster behind HAProxy; carol registered over HTTP.
// Run with web/test/run.sh (it installs Chromium and playwright-core when missing).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { Cluster, waitFor, sleep } from './cluster.mjs';

const STEP = 15000; // every bounded wait of a step
const PASSWORD = 'correct-horse-battery';
const SHOTS = '.run/web';

let cluster;
let browser;
const pages = {}; // name → {context, page, dialogs, id}
let carol;
let failed = false;

const tid = (page, id) => page.locator(`[data-testid="${id}"]`);
const messages = (page) => page.locator('#message-list [data-testid="message"]');
const messageWith = (page, text) => messages(page).filter({ has: page.locator('[data-testid="message-body"]', { hasText: text }) });
const convItem = (page, title) => page.locator(`[data-testid="conv-item"][data-title="${title}"]`);

/** A step: skipped once an earlier one failed, so the first failure is the one reported. */
function step(name, fn) {
  test(name, { timeout: 60000 }, async (t) => {
    if (failed) { t.skip('an earlier step failed'); return; }
    try { await fn(); } catch (e) { failed = true; throw e; }
  });
}

async function bodies(page) {
  return page.locator('#message-list [data-testid="message-body"]').allTextContents();
}

async function openPage(name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  context.setDefaultTimeout(STEP);
  const page = await context.newPage();
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Console errors of the page; a Content-Security-Policy violation shows there.
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  pages[name] = { context, page, dialogs, errors, consoleErrors };
  return pages[name];
}

async function registerInPage(name, display) {
  const { page } = pages[name];
  const res = await page.goto(`${cluster.url}/`);
  assert.match(res.headers()['content-security-policy'], /script-src 'self';/);
  await tid(page, 'auth-username').fill(name);
  await tid(page, 'auth-password').fill(PASSWORD);
  await tid(page, 'auth-display').fill(display);
  await tid(page, 'auth-register').click();
  await page.locator('[data-testid="conn-state"][data-state="online"]').waitFor();
  assert.equal(await tid(page, 'me-name').textContent(), display);
  const token = await page.evaluate(() => sessionStorage.getItem('chat.token'));
  pages[name].id = Number(JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).sub);
}

async function online(page) {
  await page.locator('[data-testid="conn-state"][data-state="online"]').waitFor();
}

async function send(page, text) {
  await tid(page, 'composer-input').fill(text);
  await tid(page, 'composer-send').click();
}

/** Records every state each message element had (pending → sent), by cid. */
async function watchStates(page) {
  await page.evaluate(() => {
    window.__states = {};
    const note = () => {
      for (const e of document.querySelectorAll('#message-list [data-testid="message"]')) {
        const cid = e.dataset.cid;
        if (!cid) continue;
        const s = (window.__states[cid] ??= []);
        if (s[s.length - 1] !== e.dataset.state) s.push(e.dataset.state);
      }
    };
    new MutationObserver(note).observe(document.getElementById('message-list'), { childList: true, subtree: true, attributes: true });
  });
}

async function unreadOf(page, title) {
  const badge = convItem(page, title).locator('[data-testid="conv-unread"]');
  return (await badge.count()) ? Number(await badge.textContent()) : 0;
}

// Interrupted: stop the cluster and drop the database before going.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    cluster?.abort();
    process.exit(130); // the browser goes with this process
  });
}

before(async () => {
  cluster = new Cluster();
  await cluster.start(2);
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  await openPage('alice');
  await openPage('bob');
}, { timeout: 90000 });

after(async () => {
  try {
    mkdirSync(SHOTS, { recursive: true });
    for (const [name, { page }] of Object.entries(pages)) {
      await page.screenshot({ path: `${SHOTS}/${name}.png`, timeout: STEP }).catch((e) => console.error(`screenshot ${name}: ${e.message}`));
    }
    for (const [name, p] of Object.entries(pages)) if (p.errors.length) console.error(`${name} page errors:`, p.errors);
  } finally {
    await browser?.close().catch(() => {});
    await cluster?.stop({ keepLogs: failed || !!process.env.WEB_TEST_KEEP_LOGS }).catch((e) => console.error(e));
  }
}, { timeout: 60000 });

step('alice and bob register in the page; carol over HTTP', async () => {
  await registerInPage('alice', 'Alice');
  await registerInPage('bob', 'Bob');
  const r = await fetch(`${cluster.url}/api/v1/auth/register`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'carol', password: PASSWORD, display_name: 'Carol' }),
  });
  assert.equal(r.status, 201);
  carol = await r.json();
  // The page keeps the token in sessionStorage: a reload stays logged in.
  await pages.alice.page.reload();
  await online(pages.alice.page);
  assert.equal(await tid(pages.alice.page, 'me-name').textContent(), 'Alice');
});

/** Puts alice's and bob's sockets on different nodes: HAProxy balances by least
 * connections, so bob's page is reloaded (a new socket) until it lands on the node
 * alice is not on, as `GET /service/users/{id}/sessions` tells. */
async function apart() {
  const { alice, bob } = pages;
  const one = async (p) => waitFor(async () => {
    const s = await cluster.sessions(p.id);
    return s.length === 1 && s[0];
  }, STEP, 'one session');
  const aliceNode = await one(alice);
  let bobNode = await one(bob);
  for (let i = 0; bobNode === aliceNode && i < 8; i++) {
    await bob.page.reload();
    await online(bob.page);
    bobNode = await one(bob);
  }
  assert.notEqual(bobNode, aliceNode, 'bob lands on the other node after reloads');
  alice.node = aliceNode;
  bob.node = bobNode;
}

step("alice's and bob's sockets are on different nodes", apart);

step('alice finds bob by username and sends a friend request; bob accepts', async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  await tid(a, 'tab-people').click();
  await tid(a, 'user-search').fill('bo');
  await tid(a, 'user-search-go').click();
  const hit = a.locator('[data-testid="search-result"][data-username="bob"]');
  await hit.waitFor();
  await hit.locator('[data-testid="btn-add-friend"]').click();
  await a.locator('[data-testid="outgoing-request"]').filter({ hasText: 'Bob' }).waitFor();

  // Bob sees it arrive live (the count on the People tab) and accepts.
  await tid(b, 'request-count').filter({ hasText: '1' }).waitFor();
  await tid(b, 'tab-people').click();
  const req = b.locator('[data-testid="incoming-request"]').filter({ hasText: 'Alice' });
  await req.waitFor();
  await req.locator('[data-testid="btn-accept"]').click();
  await b.locator('[data-testid="contact"][data-username="alice"]').waitFor();
  // Alice's side follows from the pushed event: bob is a contact, the request is gone.
  await a.locator('[data-testid="contact"][data-username="bob"]').waitFor();
  await a.locator('[data-testid="outgoing-request"]').waitFor({ state: 'detached' });
  // Contacts show presence: both online.
  await a.locator('[data-testid="contact"][data-username="bob"] [data-testid="presence-dot"][data-online="true"]').waitFor();
});

step('they chat both ways; pending then acked; unread rises and clears; seen; typing', async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  await a.locator('[data-testid="contact"][data-username="bob"] [data-testid="btn-chat"]').click();
  await tid(a, 'chat-title').filter({ hasText: 'Bob' }).waitFor();
  await watchStates(a);
  await send(a, 'hello bob');
  const mine = messageWith(a, 'hello bob');
  await mine.and(a.locator('[data-state="sent"]')).waitFor();
  const cid = await mine.getAttribute('data-cid');
  const states = await a.evaluate((c) => window.__states[c], cid);
  assert.deepEqual(states, ['pending', 'sent'], 'shown pending, then confirmed by the ack');

  // Bob is on his People tab: the conversation appears with an unread badge and the title counts.
  await tid(b, 'tab-chats').click();
  const item = convItem(b, 'Alice');
  await item.locator('[data-testid="conv-unread"]').filter({ hasText: '1' }).waitFor();
  await item.locator('[data-testid="conv-preview"]').filter({ hasText: 'hello bob' }).waitFor();
  await send(a, 'are you there?');
  await item.locator('[data-testid="conv-unread"]').filter({ hasText: '2' }).waitFor();
  await waitFor(async () => (await b.title()) === '(2) Chat', STEP, 'bob title (2) Chat');
  await item.locator('[data-testid="presence-dot"][data-online="true"]').waitFor();

  // Bob opens it: read, the badge and the title clear, alice sees "seen".
  await item.click();
  await messageWith(b, 'are you there?').waitFor();
  await item.locator('[data-testid="conv-unread"]').waitFor({ state: 'detached' });
  await waitFor(async () => (await b.title()) === 'Chat', STEP, 'bob title Chat');
  await messageWith(a, 'are you there?').locator('[data-testid="seen"]').waitFor();

  // Bob types: alice sees it; bob answers; alice (conversation open) reads it at once.
  await tid(b, 'composer-input').pressSequentially('hi al', { delay: 20 });
  await tid(a, 'typing').filter({ hasText: 'Bob is typing' }).waitFor();
  await tid(b, 'composer-input').fill('hi alice');
  await tid(b, 'composer-send').click();
  await messageWith(a, 'hi alice').waitFor();
  await tid(a, 'typing').filter({ hasText: /^$/ }).waitFor();
  await messageWith(b, 'hi alice').locator('[data-testid="seen"]').waitFor();
  assert.equal(await unreadOf(a, 'Bob'), 0);
});

step('edit, reply, react and recall', async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  const msg = messageWith(a, 'hello bob');
  await msg.hover();
  await msg.locator('[data-testid="btn-edit"]').click();
  await tid(a, 'composer-input').fill('hello bob (edited)');
  await tid(a, 'composer-send').click();
  const edited = messageWith(b, 'hello bob (edited)');
  await edited.locator('[data-testid="message-edited"]').waitFor();

  // Bob replies to it and reacts to it.
  await edited.hover();
  await edited.locator('[data-testid="btn-reply"]').click();
  await tid(b, 'compose-context').filter({ hasText: 'Replying to' }).waitFor();
  await send(b, 'a reply');
  await messageWith(a, 'a reply').locator('[data-testid="message-quote"]').filter({ hasText: 'hello bob (edited)' }).waitFor();
  await edited.hover();
  await edited.locator('[data-testid="btn-react"]').click();
  await messageWith(a, 'hello bob (edited)').locator('[data-testid="reaction"][data-emoji="👍"][data-count="1"]').waitFor();

  // Alice recalls "are you there?": bob sees it recalled.
  const gone = messageWith(a, 'are you there?');
  await gone.hover();
  await gone.locator('[data-testid="btn-recall"]').click();
  await b.locator('[data-testid="message-body"][data-recalled="true"]').waitFor();
  await messageWith(b, 'are you there?').waitFor({ state: 'detached' });
});

step('markup in messages renders as text', async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  const raw = ['<script>alert(1)</script>', '<img src=x onerror=alert(1)>'];
  for (const text of raw) await send(a, text);
  for (const text of raw) {
    const body = b.locator('#message-list [data-testid="message-body"]').filter({ hasText: text });
    await body.waitFor();
    assert.equal(await body.textContent(), text);
  }
  // The list preview is text too.
  const preview = convItem(b, 'Alice').locator('[data-testid="conv-preview"]');
  assert.equal(await preview.textContent(), raw[1]);
  await sleep(300);
  for (const p of [a, b]) {
    assert.equal(await p.locator('#message-list img, #message-list script').count(), 0);
    assert.equal(await p.locator('img[src="x"]').count(), 0);
  }
  assert.deepEqual([...pages.alice.dialogs, ...pages.bob.dialogs], []);
});

step('alice creates a group with bob and carol', async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  await tid(a, 'new-group').click();
  await tid(a, 'group-title').fill('Team');
  await tid(a, 'group-members').fill('bob, carol');
  await tid(a, 'group-create').click();
  await tid(a, 'chat-title').filter({ hasText: 'Team' }).waitFor();
  await tid(a, 'chat-sub').filter({ hasText: '3 members' }).waitFor();
  await send(a, 'welcome to the team');
  await messageWith(a, 'welcome to the team').and(a.locator('[data-state="sent"]')).waitFor();
  const item = convItem(b, 'Team');
  await item.locator('[data-testid="conv-preview"]').filter({ hasText: 'welcome to the team' }).waitFor();
  // Newest activity first.
  assert.equal(await b.locator('[data-testid="conv-item"]').first().getAttribute('data-title'), 'Team');
  // Carol got it over HTTP too.
  const { conversations } = await cluster.api('GET', '/conversations', { token: carol.token });
  assert.equal(conversations.find((c) => c.title === 'Team')?.last_message?.body, 'welcome to the team');
  // The members panel lists the three of them.
  await tid(a, 'btn-members').click();
  await a.locator('[data-testid="member"]').nth(2).waitFor();
  assert.equal(await a.locator('[data-testid="member"]').count(), 3);
  await tid(a, 'btn-members').click();
});

step('group: mentions, mute, history paging back, members added and removed, leaving', async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  const { conversations } = await cluster.api('GET', '/conversations', { token: carol.token });
  const team = conversations.find((c) => c.title === 'Team');
  for (let i = 1; i <= 45; i++) {
    await cluster.api('POST', `/conversations/${team.id}/messages`, { token: carol.token, body: { cid: `p-${i}`, body: `page ${i}` } });
  }
  // Alice mentions bob from the page by @username.
  await send(a, '@bob see this');
  const item = convItem(b, 'Team');
  await item.locator('[data-testid="conv-mention"]').waitFor();
  await item.locator('[data-testid="conv-unread"]').filter({ hasText: '47' }).waitFor();

  // A reload: the list's counts and marks come from the node, and the page holds no message.
  await b.reload();
  await online(b);
  await item.locator('[data-testid="conv-mention"]').waitFor();
  await item.locator('[data-testid="conv-unread"]').filter({ hasText: '47' }).waitFor();

  // Bob opens and mutes it: read, muted mark, the @ mark gone.
  await item.click();
  await messageWith(b, '@bob see this').waitFor();
  await tid(b, 'btn-mute').click();
  await item.locator('[data-testid="conv-muted"]').waitFor();
  await tid(b, 'btn-mute').filter({ hasText: 'Unmute' }).waitFor();
  await item.locator('[data-testid="conv-mention"]').waitFor({ state: 'detached' });
  await item.locator('[data-testid="conv-unread"]').waitFor({ state: 'detached' });

  // History pages back as bob scrolls up, each message once, in order.
  const pageNums = async () => (await bodies(b)).filter((t) => /^page \d+$/.test(t)).map((t) => Number(t.slice(5)));
  assert.ok((await pageNums()).length < 45, 'the first page is not the whole history');
  await waitFor(async () => {
    await tid(b, 'messages').evaluate((e) => { e.scrollTop = 0; e.dispatchEvent(new Event('scroll')); });
    return (await tid(b, 'history-status').textContent()) === 'Beginning of the conversation';
  }, STEP, 'history paged back to the start');
  assert.deepEqual(await pageNums(), Array.from({ length: 45 }, (_, i) => i + 1));
  assert.equal((await bodies(b)).filter((t) => t === 'welcome to the team').length, 1);

  // Alice removes carol and adds her back; bob sees both entries.
  await convItem(a, 'Team').click();
  await tid(a, 'btn-members').click();
  await a.locator('[data-testid="member"][data-username="carol"] [data-testid="btn-remove-member"]').click();
  await a.locator('[data-testid="member"][data-username="carol"]').waitFor({ state: 'detached' });
  await b.locator('[data-testid="message-body"]').filter({ hasText: 'Alice removed Carol' }).waitFor();
  await tid(a, 'add-member-input').fill('carol');
  await tid(a, 'btn-add-member').click();
  await a.locator('[data-testid="member"][data-username="carol"]').waitFor();
  await b.locator('[data-testid="message-body"]').filter({ hasText: 'Alice added Carol' }).waitFor();

  // Alice renames it; bob's list and the entry follow. And back.
  for (const title of ['Team two', 'Team']) {
    await tid(a, 'rename-input').fill(title);
    await tid(a, 'btn-rename').click();
    await b.locator('[data-testid="message-body"]').filter({ hasText: `Alice renamed the group to “${title}”` }).waitFor();
    await convItem(b, title).waitFor();
    await tid(b, 'chat-title').filter({ hasText: new RegExp(`^${title}$`) }).waitFor();
  }

  // Bob leaves: the group leaves his list; alice sees him go.
  await tid(b, 'btn-members').click();
  await tid(b, 'btn-leave').click();
  await convItem(b, 'Team').waitFor({ state: 'detached' });
  await a.locator('[data-testid="message-body"]').filter({ hasText: 'Bob left' }).waitFor();
  await a.locator('[data-testid="member"][data-username="bob"]').waitFor({ state: 'detached' });
  assert.equal(await a.locator('[data-testid="member"]').count(), 2);
  await tid(a, 'btn-members').click();
});

step('friend requests declined and cancelled', async () => {
  const b = pages.bob.page;
  await cluster.api('POST', '/contacts/requests', { token: carol.token, body: { user: pages.bob.id, note: 'hi from carol' } });
  await tid(b, 'request-count').filter({ hasText: '1' }).waitFor();
  await tid(b, 'tab-people').click();
  const req = b.locator('[data-testid="incoming-request"]').filter({ hasText: 'Carol' });
  await req.filter({ hasText: 'hi from carol' }).waitFor();
  await req.locator('[data-testid="btn-decline"]').click();
  await req.waitFor({ state: 'detached' });
  await tid(b, 'request-count').waitFor({ state: 'hidden' });

  await tid(b, 'user-search').fill('carol');
  await tid(b, 'user-search-go').click();
  await b.locator('[data-testid="search-result"][data-username="carol"] [data-testid="btn-add-friend"]').click();
  const out = b.locator('[data-testid="outgoing-request"]').filter({ hasText: 'Carol' });
  await out.waitFor();
  assert.equal((await cluster.api('GET', '/contacts', { token: carol.token })).incoming.length, 1);
  await out.locator('[data-testid="btn-cancel"]').click();
  await out.waitFor({ state: 'detached' });
  assert.equal((await cluster.api('GET', '/contacts', { token: carol.token })).incoming.length, 0);
  await tid(b, 'tab-chats').click();
});

step('a broadcast shows as a read-only conversation', async () => {
  const b = pages.bob.page;
  await cluster.api('POST', '/broadcasts', { body: { audience: 'all', body: 'Maintenance tonight at 22:00', cid: 'bc-1' } });
  const item = b.locator('[data-testid="conv-item"][data-kind="broadcast"]');
  await item.locator('[data-testid="conv-preview"]').filter({ hasText: 'Maintenance tonight' }).waitFor();
  await item.locator('[data-testid="conv-unread"]').filter({ hasText: '1' }).waitFor();
  await item.click();
  await messageWith(b, 'Maintenance tonight at 22:00').waitFor();
  await tid(b, 'readonly-note').waitFor();
  assert.equal(await tid(b, 'composer').isVisible(), false);
  await item.locator('[data-testid="conv-unread"]').waitFor({ state: 'detached' });

  // Newest first, but a pinned conversation stays on top.
  const first = () => b.locator('[data-testid="conv-item"]').first();
  assert.equal(await first().getAttribute('data-kind'), 'broadcast');
  await convItem(b, 'Alice').click();
  await tid(b, 'btn-pin').click();
  await convItem(b, 'Alice').locator('[data-testid="conv-pinned"]').waitFor();
  assert.equal(await first().getAttribute('data-title'), 'Alice');
});

step("bob's node is killed while alice sends 5 messages: bob's page reconnects and shows them once, in order", async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  await apart(); // bob's page was reloaded since
  await convItem(a, 'Bob').click();
  await tid(a, 'chat-title').filter({ hasText: 'Bob' }).waitFor();
  await convItem(b, 'Alice').click();
  await tid(b, 'chat-title').filter({ hasText: 'Alice' }).waitFor();
  await messageWith(b, '<img src=x onerror=alert(1)>').waitFor();
  const bobNode = pages.bob.node;
  const states = [];
  await b.exposeFunction('__connState', (s) => states.push(s));
  await b.evaluate(() => {
    const e = document.querySelector('[data-testid="conn-state"]');
    new MutationObserver(() => window.__connState(e.dataset.state)).observe(e, { attributes: true });
  });

  await cluster.node(bobNode).kill('SIGKILL');
  for (let i = 1; i <= 5; i++) await send(a, `offline ${i}`);
  for (let i = 1; i <= 5; i++) await messageWith(a, `offline ${i}`).and(a.locator('[data-state="sent"]')).waitFor();

  await waitFor(() => states.includes('reconnecting'), STEP, 'bob reconnecting');
  await online(b);
  await messageWith(b, 'offline 5').waitFor();
  await sleep(500); // anything duplicated would be in by now
  const got = (await bodies(b)).filter((t) => t.startsWith('offline '));
  assert.deepEqual(got, ['offline 1', 'offline 2', 'offline 3', 'offline 4', 'offline 5']);
  const [now] = await waitFor(async () => { const s = await cluster.sessions(pages.bob.id); return s.length === 1 && s; }, STEP, "bob's new session");
  assert.notEqual(now, bobNode, 'bob reconnected to the other node');
  // Bob has the conversation open: alice sees her last one seen.
  try {
    await messageWith(a, 'offline 5').locator('[data-testid="seen"]').waitFor();
  } catch (e) {
    const token = await b.evaluate(() => sessionStorage.getItem('chat.token'));
    const { conversations } = await cluster.api('GET', '/conversations', { token });
    console.error('DEBUG bob direct', JSON.stringify(conversations.filter((c) => c.kind === 'direct').map(({ id, last_seq, read_seq, unread }) => ({ id, last_seq, read_seq, unread }))));
    console.error('DEBUG bob state', await tid(b, 'conn-state').textContent(), await b.title(), await b.evaluate(() => document.visibilityState));
    throw e;
  }
});

step('carol logs in in a page; alice sees her come online and go offline', async () => {
  const a = pages.alice.page;
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  context.setDefaultTimeout(STEP);
  try {
    const c = await context.newPage();
    await c.goto(`${cluster.url}/`);
    await tid(c, 'auth-username').fill('carol');
    await tid(c, 'auth-password').fill('wrong-password');
    await tid(c, 'auth-login').click();
    await tid(c, 'auth-error').filter({ hasText: /\S/ }).waitFor();
    await tid(c, 'auth-password').fill(PASSWORD);
    await tid(c, 'auth-login').click();
    await online(c);
    await convItem(c, 'Team').waitFor();

    await convItem(a, 'Team').click();
    await tid(a, 'btn-members').click();
    const dotOf = a.locator('[data-testid="member"][data-username="carol"] [data-testid="presence-dot"]');
    await dotOf.and(a.locator('[data-online="true"]')).waitFor();
    await context.close();
    await dotOf.and(a.locator('[data-online="false"]')).waitFor();
    await tid(a, 'btn-members').click();
  } finally {
    await context.close().catch(() => {});
  }
  await convItem(a, 'Bob').click();
});

step('/docs shows every operation of the OpenAPI document, and the webhook', async () => {
  const docs = await pages.alice.page.context().newPage();
  const errors = [];
  docs.on('pageerror', (e) => errors.push(String(e)));
  docs.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  try {
    const res = await docs.goto(`${cluster.url}/docs`);
    assert.equal(res.status(), 200);
    const spec = await (await fetch(`${cluster.url}/api/v1/openapi.json`)).json();
    const count = Object.values(spec.paths).flatMap((i) => Object.keys(i)).length;
    await docs.locator('details.op').nth(count - 1).waitFor();
    assert.equal(await docs.locator('details.op').count(), count + Object.keys(spec.webhooks ?? {}).length);
    await docs.locator('details.op', { hasText: 'webhook: offline_notifications' }).waitFor();
    await docs.fill('#filter', 'settings');
    const shown = await docs.locator('details.op:not([hidden])').count();
    assert.ok(shown >= 1 && shown < count, `filtered to ${shown}`);
    assert.deepEqual(errors, []);
  } finally {
    await docs.close();
  }
});

step('a phone-sized screen shows one pane at a time', async () => {
  const b = pages.bob.page;
  await b.setViewportSize({ width: 390, height: 760 });
  assert.equal(await tid(b, 'chat').isVisible(), true);
  mkdirSync(SHOTS, { recursive: true });
  await b.screenshot({ path: `${SHOTS}/bob-phone.png` });
  assert.equal(await tid(b, 'conv-list').isVisible(), false);
  await tid(b, 'back').click();
  await tid(b, 'conv-list').waitFor();
  assert.equal(await tid(b, 'chat').isVisible(), false);
  await convItem(b, 'Alice').click();
  await messageWith(b, 'offline 5').waitFor();
  await b.setViewportSize({ width: 1100, height: 760 });
  assert.deepEqual([...pages.alice.errors, ...pages.bob.errors], []);
  const csp = [...pages.alice.consoleErrors, ...pages.bob.consoleErrors].filter((t) => /Content Security Policy|Refused to/i.test(t));
  assert.deepEqual(csp, [], 'no CSP violation');
});
