// The web chat page. Plain ES module on the project's client library (served at /client/).
// Everything users wrote is put on the page as text (textContent), never as HTML.
import { ChatClient, ChatHttp } from '/client/index.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'chat.token';
const PAGE = 30; // history page
const TYPING_MS = 5000; // how long a typing frame shows
const TYPING_EVERY_MS = 3000; // how often we send ours while typing

/** Element helper: el('span', {testid: 'x', class: 'y', text: 'z'}, ...children) */
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'testid') e.dataset.testid = v;
    else if (k === 'class') e.className = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// State --------------------------------------------------------------------------------

const http = new ChatHttp({ url: location.origin });
/** @type {ChatClient|null} */
let client = null;
let me = null;
/** conversation id → conversation object of the node, plus the page's own fields (`_…`) */
const convs = new Map();
/** user id → {id, username, display_name, avatar_url} */
const users = new Map();
const userFetches = new Map();
/** user id → {online, last_seen} */
const presence = new Map();
let contacts = { contacts: [], incoming: [], outgoing: [] };
let openId = null;
/** cid → {conv, body, reply_to, state: 'pending'|'failed', error} */
const outbox = new Map();
let compose = null; // {mode: 'reply'|'edit', seq}
let everOnline = false;
let seenCounter = 0; // ordering of conversations with no message yet

function convState(c) {
  c._messages ??= new Map(); // seq → message (people's messages and system entries)
  c._reads ??= new Map(); // user → seq (receipts seen while the page was open)
  c._typing ??= new Map(); // user → until (ms)
  c._seenAt ??= --seenCounter;
  c._addedAt ??= Date.now();
  return c;
}

function upsertConv(c) {
  const old = convs.get(c.id);
  if (old) {
    // A list read before the newest pushes were shown must not take them back.
    c = { ...c, last_seq: Math.max(c.last_seq ?? 0, old.last_seq ?? 0), read_seq: Math.max(c.read_seq ?? 0, old.read_seq ?? 0) };
    if ((old.last_message?.seq ?? 0) > (c.last_message?.seq ?? 0)) { c.last_message = old.last_message; c.preview = old.preview ?? null; }
  }
  const merged = old ? Object.assign(old, c) : convState(c);
  convs.set(c.id, merged);
  return merged;
}

// Users --------------------------------------------------------------------------------

function rememberUser(u) {
  if (!u || u.id === undefined) return;
  users.set(u.id, { ...users.get(u.id), ...u });
}

function userName(id) {
  if (me && id === me.id) return 'You';
  const u = users.get(id);
  if (u) return u.display_name || u.username;
  fetchUser(id);
  return `user ${id}`;
}

function fetchUser(id) {
  if (users.has(id) || userFetches.has(id)) return userFetches.get(id);
  const p = http.user(id).then((u) => { rememberUser(u); scheduleRender(); return u; })
    .catch(() => null).finally(() => userFetches.delete(id));
  userFetches.set(id, p);
  return p;
}

function peerOf(c) {
  if (c.kind !== 'direct' || !me) return null;
  return (c.members ?? []).find((m) => m !== me.id) ?? me.id;
}

function convTitle(c) {
  if (c.kind === 'direct') return userName(peerOf(c));
  return c.title ?? `conversation ${c.id}`;
}

function initials(name) {
  const parts = String(name).trim().split(/[\s._-]+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[1][0] : String(name).slice(0, 2);
  return s.toUpperCase();
}

function avatar(name, url) {
  const box = el('span', { class: 'avatar', testid: 'avatar', 'aria-hidden': 'true' });
  if (url && /^https?:\/\//.test(url)) {
    box.append(el('img', { src: url, alt: '', referrerpolicy: 'no-referrer' }));
  } else {
    box.textContent = initials(name);
  }
  return box;
}

function dot(userId) {
  const p = presence.get(userId);
  const online = !!p?.online;
  return el('span', {
    class: `dot ${online ? 'on' : 'off'}`, testid: 'presence-dot',
    data: { online: String(online), user: String(userId) },
    title: online ? 'online' : (p?.last_seen ? `last seen ${fmtTime(p.last_seen)}` : 'offline'),
  });
}

// Formatting ---------------------------------------------------------------------------

function fmtTime(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
}

function systemText(m) {
  const s = m.system ?? {};
  const who = (ids) => (ids ?? []).map(userName).join(', ');
  switch (s.action) {
    case 'added': return `${userName(s.actor)} added ${who(s.users)}`;
    case 'removed': return `${userName(s.actor)} removed ${who(s.users)}`;
    case 'left': return `${who(s.users) || userName(s.actor)} left`;
    case 'renamed': return `${userName(s.actor)} renamed the group to “${s.title ?? ''}”`;
    case 'role_changed': return `${who(s.users)} is now ${s.role ?? 'member'}`;
    case 'muted': return `${userName(s.actor)} muted ${who(s.users)}`;
    case 'unmuted': return `${userName(s.actor)} unmuted ${who(s.users)}`;
    case 'banned': return `${userName(s.actor)} banned ${who(s.users)}`;
    case 'unbanned': return `${userName(s.actor)} unbanned ${who(s.users)}`;
    default: return s.action ? `[${s.action}]` : '[system]';
  }
}

function previewOf(m) {
  if (!m) return '';
  if (m.recalled) return '[recalled]';
  if (m.kind === 'system') return systemText(m);
  if (m.kind && m.kind !== 'text') return m.body ? `[${m.kind}] ${m.body}` : `[${m.kind}]`;
  return m.body ?? '';
}

function isMuted(c) {
  const u = c.muted_until;
  if (!u) return false;
  return u === 'forever' || Date.parse(u) > Date.now();
}

function activity(c) {
  return c.last_message?.ts ? Date.parse(c.last_message.ts) : c._seenAt;
}

const isFolding = (m) => m.kind === 'edit' || m.kind === 'recall' || m.kind === 'reaction';

// Rendering ----------------------------------------------------------------------------

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

function render() {
  if (!me) return;
  renderList();
  renderChat();
  renderPeople();
  const total = [...convs.values()].reduce((n, c) => n + (c.unread ?? 0), 0);
  document.title = total > 0 ? `(${total}) Chat` : 'Chat';
  const badge = $('total-unread');
  badge.hidden = total === 0;
  badge.textContent = String(total);
}

function renderList() {
  const list = $('conv-list');
  // Pinned ones on top, then newest activity first.
  const items = [...convs.values()].sort((a, b) => (!!b.pinned - !!a.pinned) || (activity(b) - activity(a)) || (b.id - a.id));
  $('conv-empty').hidden = items.length > 0;
  const lis = items.map((c) => {
    const title = convTitle(c);
    const peer = peerOf(c);
    const peerUser = peer !== null ? users.get(peer) : null;
    const last = c.last_message;
    const preview = c.preview ?? previewOf(last);
    const li = el('li', {
      class: `conv${c.id === openId ? ' open' : ''}${c.unread ? ' has-unread' : ''}`,
      testid: 'conv-item', data: { conv: String(c.id), kind: c.kind, title },
      tabindex: '0', role: 'button',
      onclick: () => openConv(c.id),
      onkeydown: (e) => { if (e.key === 'Enter') openConv(c.id); },
    },
    el('span', { class: 'avatar-wrap' }, avatar(title, peerUser?.avatar_url), peer !== null ? dot(peer) : null),
    el('div', { class: 'conv-main' },
      el('div', { class: 'conv-top' },
        el('span', { class: 'conv-title', testid: 'conv-title', text: title }),
        c.kind === 'broadcast' ? el('span', { class: 'tag', text: 'broadcast' }) : null,
        c.kind === 'group' ? el('span', { class: 'tag', text: 'group' }) : null,
        el('span', { class: 'conv-time', testid: 'conv-time', text: fmtTime(last?.ts) })),
      el('div', { class: 'conv-bottom' },
        el('span', { class: 'conv-preview', testid: 'conv-preview', text: preview }),
        c.pinned ? el('span', { class: 'pin-mark', testid: 'conv-pinned', title: 'pinned', text: '📌' }) : null,
        isMuted(c) ? el('span', { class: 'muted-mark', testid: 'conv-muted', title: 'muted', text: '🔕' }) : null,
        c.mentions_unread > 0 ? el('span', { class: 'mention', testid: 'conv-mention', title: 'mentions you', text: '@' }) : null,
        c.unread > 0 ? el('span', { class: `badge${isMuted(c) ? ' quiet' : ''}`, testid: 'conv-unread', text: String(c.unread) }) : null)));
    return li;
  });
  list.replaceChildren(...lis);
}

function renderPeople() {
  const inc = contacts.incoming ?? [];
  const out = contacts.outgoing ?? [];
  const rc = $('request-count');
  rc.hidden = inc.length === 0;
  rc.textContent = String(inc.length);
  $('incoming').replaceChildren(...inc.map((r) => el('li', {
    class: 'person', testid: 'incoming-request', data: { request: String(r.id), username: users.get(r.from)?.username ?? '' },
  }, avatar(userName(r.from)), el('span', { class: 'name', text: userName(r.from) }),
  r.note ? el('span', { class: 'note', text: r.note }) : null,
  el('button', { type: 'button', testid: 'btn-accept', text: 'Accept', onclick: () => answer(() => http.acceptRequest(r.id)) }),
  el('button', { type: 'button', testid: 'btn-decline', class: 'link', text: 'Decline', onclick: () => answer(() => http.declineRequest(r.id)) }))));
  $('outgoing').replaceChildren(...out.map((r) => el('li', {
    class: 'person', testid: 'outgoing-request', data: { request: String(r.id), username: users.get(r.to)?.username ?? '' },
  }, avatar(userName(r.to)), el('span', { class: 'name', text: userName(r.to) }), el('span', { class: 'note', text: 'pending' }),
  el('button', { type: 'button', testid: 'btn-cancel', class: 'link', text: 'Cancel', onclick: () => answer(() => http.cancelRequest(r.id)) }))));
  $('contacts').replaceChildren(...(contacts.contacts ?? []).map((c) => el('li', {
    class: 'person', testid: 'contact', data: { user: String(c.user), username: c.username },
  }, el('span', { class: 'avatar-wrap' }, avatar(c.display_name || c.username, c.avatar_url), dot(c.user)),
  el('span', { class: 'name', text: c.display_name || c.username }),
  el('span', { class: 'note', text: `@${c.username}` }),
  el('button', { type: 'button', testid: 'btn-chat', text: 'Chat', onclick: () => startDirect(c.user) }),
  el('button', { type: 'button', class: 'link', testid: 'btn-unfriend', text: 'Remove', onclick: () => answer(() => http.unfriend(c.user)) }))));
}

function readersOf(c, seq) {
  const out = [];
  for (const [user, s] of c._reads) if (user !== me.id && s >= seq) out.push(user);
  return out;
}

function renderMessage(c, m) {
  const mine = m.sender === me.id;
  const li = el('li', {
    class: `msg${mine ? ' mine' : ''}${m.kind === 'system' ? ' system' : ''}${m.recalled ? ' recalled' : ''}`,
    testid: 'message', data: { seq: String(m.seq), cid: m.cid ?? '', state: 'sent', mine: String(mine), sender: String(m.sender) },
  });
  if (m.kind === 'system') {
    li.append(el('span', { class: 'body', testid: 'message-body', text: systemText(m) }));
    return li;
  }
  const bubble = el('div', { class: 'bubble' });
  if (c.kind !== 'direct' && !mine) bubble.append(el('div', { class: 'sender', testid: 'message-sender', text: userName(m.sender) }));
  if (m.reply_to) {
    const target = c._messages.get(m.reply_to);
    bubble.append(el('div', { class: 'quote', testid: 'message-quote', data: { seq: String(m.reply_to) },
      text: target ? `${userName(target.sender)}: ${previewOf(target)}` : `reply to #${m.reply_to}` }));
  }
  if (m.recalled) {
    bubble.append(el('div', { class: 'body', testid: 'message-body', data: { recalled: 'true' }, text: 'message recalled' }));
  } else {
    bubble.append(el('div', { class: 'body', testid: 'message-body', text: m.kind && m.kind !== 'text' ? previewOf(m) : m.body }));
  }
  const meta = el('div', { class: 'meta', testid: 'message-meta' },
    el('time', { datetime: m.ts, text: fmtTime(m.ts) }),
    m.edited && !m.recalled ? el('span', { testid: 'message-edited', text: ' · edited' }) : null);
  if (mine && c.kind !== 'broadcast') {
    const readers = readersOf(c, m.seq);
    if (readers.length) {
      meta.append(el('span', { class: 'seen', testid: 'seen', text: c.kind === 'direct' ? ' · seen' : ` · seen by ${readers.length}` }));
    }
  }
  bubble.append(meta);
  if (m.reactions?.length) {
    bubble.append(el('div', { class: 'reactions', testid: 'reactions' }, ...m.reactions.filter((r) => r.count > 0).map((r) => el('button', {
      type: 'button', class: `reaction${r.me ? ' me' : ''}`, testid: 'reaction', data: { emoji: r.emoji, count: String(r.count), me: String(!!r.me) },
      text: `${r.emoji} ${r.count}`, onclick: () => react(c, m, r.emoji, !r.me),
    }))));
  }
  li.append(bubble);
  if (!m.recalled && c.kind !== 'broadcast') {
    const actions = el('div', { class: 'actions' },
      el('button', { type: 'button', testid: 'btn-reply', title: 'Reply', text: '↩', onclick: () => startCompose('reply', m) }),
      el('button', { type: 'button', testid: 'btn-react', title: 'React 👍', text: '👍', onclick: () => react(c, m, '👍', !m.reactions?.find((r) => r.emoji === '👍')?.me) }),
      mine ? el('button', { type: 'button', testid: 'btn-edit', title: 'Edit', text: '✎', onclick: () => startCompose('edit', m) }) : null,
      mine ? el('button', { type: 'button', testid: 'btn-recall', title: 'Recall', text: '⌫', onclick: () => recall(c, m) }) : null);
    li.append(actions);
  }
  return li;
}

function renderPending(cid, p) {
  const failed = p.state === 'failed';
  return el('li', { class: `msg mine pending${failed ? ' failed' : ''}`, testid: 'message', data: { cid, state: p.state, mine: 'true' } },
    el('div', { class: 'bubble' },
      el('div', { class: 'body', testid: 'message-body', text: p.body }),
      el('div', { class: 'meta', testid: 'message-meta', text: failed ? `not sent: ${p.error ?? ''} ` : 'sending…' },
        failed ? el('button', { type: 'button', class: 'link', testid: 'btn-retry', text: 'Retry', onclick: () => sendOut(cid) }) : null,
        failed ? el('button', { type: 'button', class: 'link', testid: 'btn-discard', text: 'Discard', onclick: () => { outbox.delete(cid); scheduleRender(); } }) : null)));
}

function renderChat() {
  const c = openId !== null ? convs.get(openId) : null;
  document.body.classList.toggle('chat-visible', !!c);
  $('chat-none').hidden = !!c;
  $('chat-open').hidden = !c;
  if (!c) return;
  const title = convTitle(c);
  $('chat-title').textContent = title;
  const peer = peerOf(c);
  const sub = $('chat-sub');
  sub.replaceChildren();
  if (peer !== null) {
    const p = presence.get(peer);
    sub.append(dot(peer), document.createTextNode(p?.online ? ' online' : (p?.last_seen ? ` last seen ${fmtTime(p.last_seen)}` : ' offline')));
  } else if (c.kind === 'group') {
    sub.textContent = `${c.members?.length ?? 0} members`;
  } else {
    sub.textContent = 'broadcast';
  }
  $('chat-avatar').replaceChildren(avatar(title, peer !== null ? users.get(peer)?.avatar_url : null));
  $('mute').textContent = isMuted(c) ? 'Unmute' : 'Mute';
  $('pin').textContent = c.pinned ? 'Unpin' : 'Pin';
  $('members-toggle').hidden = c.kind !== 'group';
  if (c.kind !== 'group') $('members-panel').hidden = true;
  if (!$('members-panel').hidden) renderMembers(c);
  const readonly = c.kind === 'broadcast';
  $('readonly').hidden = !readonly;
  $('composer').hidden = readonly;

  // Messages: keep the reader's place unless they are at the bottom.
  const box = $('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const prevTop = box.scrollTop;
  const list = [...c._messages.values()].filter((m) => !isFolding(m)).sort((a, b) => a.seq - b.seq);
  const nodes = list.map((m) => renderMessage(c, m));
  for (const [cid, p] of outbox) if (p.conv === c.id) nodes.push(renderPending(cid, p));
  $('message-list').replaceChildren(...nodes);
  $('history-status').textContent = c._historyDone ? (list.length ? 'Beginning of the conversation' : 'No messages yet') : (c._loading ? 'Loading…' : '');
  if (c._stickBottom || atBottom) { box.scrollTop = box.scrollHeight; c._stickBottom = false; }
  else if (c._keepPlace) { box.scrollTop = prevTop + (box.scrollHeight - c._keepPlace); c._keepPlace = 0; }
  else box.scrollTop = prevTop;
  // A first page that does not fill the box cannot be scrolled: take the next one.
  if (c._loaded && !c._loading && !c._historyDone && box.scrollHeight <= box.clientHeight + 10) setTimeout(() => loadOlder(c), 0);

  // Typing
  const now = Date.now();
  const typers = [...c._typing].filter(([, until]) => until > now).map(([u]) => userName(u));
  $('typing').textContent = typers.length ? `${typers.join(', ')} ${typers.length > 1 ? 'are' : 'is'} typing…` : '';

  const ctx = $('compose-context');
  ctx.hidden = !compose;
  if (compose) {
    const t = c._messages.get(compose.seq);
    ctx.dataset.mode = compose.mode;
    $('compose-context-text').textContent = compose.mode === 'edit' ? 'Editing your message' : `Replying to ${t ? `${userName(t.sender)}: ${previewOf(t)}` : `#${compose.seq}`}`;
  }
}

function renderMembers(c) {
  const mine = c.role === 'owner' || c.role === 'admin';
  $('members').replaceChildren(...(c.members ?? []).map((u) => el('li', { class: 'person', testid: 'member', data: { user: String(u), username: users.get(u)?.username ?? '' } },
    el('span', { class: 'avatar-wrap' }, avatar(userName(u), users.get(u)?.avatar_url), dot(u)),
    el('span', { class: 'name', text: userName(u) }),
    mine && u !== me.id ? el('button', { type: 'button', class: 'link', testid: 'btn-remove-member', text: 'Remove', onclick: () => groupCall(() => http.removeMember(c.id, u)) }) : null)));
  $('add-member-form').hidden = !mine;
  $('rename-form').hidden = !mine;
}

// Actions ------------------------------------------------------------------------------

function showError(id, e) {
  $(id).textContent = e ? (e.message || String(e)) : '';
}

async function answer(fn) {
  try { showError('people-error'); await fn(); await loadContacts(); } catch (e) { showError('people-error', e); }
}

async function groupCall(fn) {
  try {
    showError('members-error');
    const r = await fn();
    if (r?.conversation) upsertConv(r.conversation);
    scheduleRender();
  } catch (e) { showError('members-error', e); }
}

async function startDirect(peer) {
  try {
    const { conversation } = await http.createDirect(peer);
    upsertConv(conversation);
    showTab('chats');
    openConv(conversation.id);
  } catch (e) { showError('people-error', e); }
}

async function findUser(username) {
  const { users: found } = await http.searchUsers(username);
  found.forEach(rememberUser);
  return found.find((u) => u.username === username);
}

function react(c, m, emoji, on) {
  client.react(c.id, m.seq, emoji, on).catch((e) => showError('composer-error', e));
}

function recall(c, m) {
  client.recall(c.id, m.seq).catch((e) => showError('composer-error', e));
}

function startCompose(mode, m) {
  compose = { mode, seq: m.seq };
  const input = $('composer-input');
  if (mode === 'edit') input.value = m.body;
  input.focus();
  scheduleRender();
}

function endCompose() {
  if (compose?.mode === 'edit') $('composer-input').value = '';
  compose = null;
  scheduleRender();
}

function newCid() {
  return crypto.randomUUID?.() ?? `w-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function submitComposer() {
  const c = convs.get(openId);
  const input = $('composer-input');
  const body = input.value;
  if (!c || !body.trim()) return;
  showError('composer-error');
  if (compose?.mode === 'edit') {
    const seq = compose.seq;
    client.edit(c.id, seq, body).catch((e) => showError('composer-error', e));
    input.value = '';
    compose = null;
    scheduleRender();
    return;
  }
  const cid = newCid();
  const opts = { cid };
  const mentions = mentionsIn(c, body);
  if (mentions.length) opts.mentions = mentions;
  if (compose?.mode === 'reply') opts.reply_to = compose.seq;
  outbox.set(cid, { conv: c.id, body, opts, state: 'pending' });
  input.value = '';
  compose = null;
  c._stickBottom = true;
  render(); // the pending bubble shows before anything else can happen
  sendOut(cid);
}

/** Sends (or, after a refusal, sends again with the same cid) an outbox entry. */
function sendOut(cid) {
  const p = outbox.get(cid);
  if (!p) return;
  p.state = 'pending';
  scheduleRender();
  client.send(p.conv, p.body, p.opts).then(() => {
    outbox.delete(cid); // the `message` event from the ack has put it in place
    scheduleRender();
  }, (e) => {
    if (outbox.get(cid) === p) { p.state = 'failed'; p.error = e.code ?? e.message; }
    scheduleRender();
  });
}

/** `@username` of a group member (or `@all`) in a group message: its mentions. */
function mentionsIn(c, body) {
  if (c.kind !== 'group') return [];
  const byName = new Map();
  for (const u of c.members ?? []) { const p = users.get(u); if (p && u !== me.id) byName.set(p.username, u); }
  const out = new Set();
  for (const [, name] of body.matchAll(/(?:^|\s)@([a-z0-9_.-]{3,32})/g)) {
    if (name === 'all') out.add(0);
    else if (byName.has(name)) out.add(byName.get(name));
  }
  return [...out];
}

let lastTypingSent = 0;
function onComposerInput() {
  const c = convs.get(openId);
  if (!c || c.kind === 'broadcast' || !client || client.state !== 'online') return;
  const now = Date.now();
  if (now - lastTypingSent < TYPING_EVERY_MS) return;
  lastTypingSent = now;
  client.typing(c.id).catch(() => {});
}

// Reading ------------------------------------------------------------------------------

const readTimers = new Map();
/** Marks the open conversation read up to what it shows, when the page is visible. A read
 * that fails (a node going away under the load balancer) is tried again, a few times. */
function markRead(tries = 0) {
  const c = openId !== null ? convs.get(openId) : null;
  if (!c || document.visibilityState !== 'visible' || !client) return;
  if ((c.read_seq ?? 0) >= (c.last_seq ?? 0) && !c.unread) return;
  if (readTimers.has(c.id)) return; // one read at a time; it reads up to the newest
  readTimers.set(c.id, setTimeout(async () => {
    const upTo = c.last_seq ?? 0;
    try {
      const r = await client.read(c.id, upTo);
      c.read_seq = Math.max(c.read_seq ?? 0, r.read_seq); c.unread = r.unread; c.mentions_unread = r.mentions_unread;
      readTimers.delete(c.id);
      scheduleRender();
      if ((c.last_seq ?? 0) > upTo) markRead(); // more came meanwhile
    } catch (e) {
      readTimers.delete(c.id);
      if (tries < 5 && e.code !== 'not_member' && e.code !== 'not_found') setTimeout(() => markRead(tries + 1), 500 * 2 ** tries);
    }
  }, tries ? 0 : 150));
}

async function openConv(id) {
  const c = convs.get(id);
  if (!c) return;
  if (openId !== id) { compose = null; $('members-panel').hidden = true; showError('composer-error'); }
  openId = id;
  c._stickBottom = true;
  for (const u of c.members ?? []) fetchUser(u);
  scheduleRender();
  if (!c._loaded && !c._loading) await loadOlder(c);
  markRead();
  if (matchMedia('(min-width: 720px)').matches) $('composer-input').focus();
}

async function loadOlder(c) {
  if (c._loading || c._historyDone) return;
  c._loading = true;
  scheduleRender();
  try {
    const before = c._oldest;
    const page = await http.history(c.id, { limit: PAGE, ...(before ? { before_seq: before } : {}) });
    for (const m of page.messages) {
      if (isFolding(m)) continue; // history comes folded
      if (!c._messages.has(m.seq) || !before) c._messages.set(m.seq, m);
    }
    const first = page.messages[0]?.seq;
    if (first !== undefined) c._oldest = Math.min(c._oldest ?? Infinity, first);
    if (!page.messages.length || first <= page.oldest_retained_seq) c._historyDone = true;
    if (before) c._keepPlace = $('messages').scrollHeight;
    else c._stickBottom = true;
    c._loaded = true;
  } catch (e) {
    showError('composer-error', e);
  } finally {
    c._loading = false;
    scheduleRender();
  }
}

// Live events --------------------------------------------------------------------------

function applyEntry(c, m) {
  const t = c._messages.get(m.target);
  if (m.kind === 'edit') {
    if (t) { t.body = m.body; t.edited = true; }
  } else if (m.kind === 'recall') {
    if (t) { t.recalled = true; t.body = ''; t.reactions = []; t.attach = null; }
    if (c.last_message?.seq === m.target) { c.last_message = { ...c.last_message, recalled: true, body: '' }; c.preview = '[recalled]'; }
  } else if (m.kind === 'reaction' && t && m.reaction) {
    const { emoji, on } = m.reaction;
    const mine = m.sender === me.id;
    t.reactions = [...(t.reactions ?? [])];
    let r = t.reactions.find((x) => x.emoji === emoji);
    if (!r) { r = { emoji, count: 0, me: false }; t.reactions.push(r); }
    if (mine) {
      if (r.me !== on) r.count += on ? 1 : -1;
      r.me = on;
    } else {
      r.count = Math.max(0, r.count + (on ? 1 : -1));
    }
    t.reactions = t.reactions.filter((x) => x.count > 0);
  }
  if (m.kind === 'edit' && c.last_message?.seq === m.target) {
    c.last_message = { ...c.last_message, body: m.body, edited: true };
    c.preview = null;
  }
}

function onMessage(m) {
  const c = convs.get(m.conv);
  if (!c) { refreshConvs(); return; }
  if (outbox.has(m.cid) && m.sender === me.id) outbox.delete(m.cid);
  if (isFolding(m)) { applyEntry(c, m); scheduleRender(); return; }
  c._messages.set(m.seq, m);
  if (c._oldest === undefined) c._oldest = m.seq;
  c.last_seq = Math.max(c.last_seq ?? 0, m.seq);
  c.last_message = m;
  c.preview = null;
  c._typing.delete(m.sender);
  // The sender of a message has read up to it (§5.5).
  c._reads.set(m.sender, Math.max(c._reads.get(m.sender) ?? 0, m.seq));
  if (m.sender === me.id) {
    c.read_seq = m.seq; c.unread = 0; c.mentions_unread = 0;
  } else if (m.kind !== 'system' && m.seq > (c.read_seq ?? 0)) {
    c.unread = (c.unread ?? 0) + 1;
    if ((m.mentions ?? []).some((u) => u === me.id || u === 0)) c.mentions_unread = (c.mentions_unread ?? 0) + 1;
  }
  if (m.kind === 'system') refreshConvs(); // members or title changed
  if (m.conv === openId) { c._stickBottom = isNearBottom(); markRead(); }
  scheduleRender();
}

function isNearBottom() {
  const box = $('messages');
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

let refreshTimer = null;
function refreshConvs() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(loadConvs, 200);
}

async function loadConvs() {
  const started = Date.now();
  let before;
  const seen = new Set();
  for (let page = 0; page < 10; page++) {
    const r = await http.conversations({ limit: 100, before }).catch(() => null);
    if (!r) return;
    for (const c of r.conversations) {
      seen.add(c.id);
      const known = convs.get(c.id);
      // Keep what we hold; take the node's counts and last message.
      upsertConv(c);
      if (known && c.last_message) known.preview = c.preview ?? null;
      if (c.kind === 'direct') fetchUser(peerOf(c));
    }
    if (!r.next_before) break;
    before = r.next_before;
  }
  // Gone from the list: left on another device, or removed. One created or joined while
  // the list was being read stays.
  for (const [id, c] of [...convs]) if (!seen.has(id) && c._addedAt < started) convs.delete(id);
  if (openId !== null && !convs.has(openId)) openId = null;
  scheduleRender();
  askPresence();
}

async function loadContacts() {
  const r = await http.contacts().catch(() => null);
  if (!r) return;
  contacts = r;
  for (const c of r.contacts) rememberUser({ id: c.user, username: c.username, display_name: c.display_name, avatar_url: c.avatar_url });
  for (const q of [...r.incoming, ...r.outgoing]) { fetchUser(q.from); fetchUser(q.to); }
  scheduleRender();
  askPresence();
}

let presenceTimer = null;
function askPresence() {
  clearTimeout(presenceTimer);
  presenceTimer = setTimeout(async () => {
    const ids = new Set((contacts.contacts ?? []).map((c) => c.user));
    for (const c of convs.values()) { const p = peerOf(c); if (p !== null && p !== me.id) ids.add(p); }
    if (openId !== null) for (const u of convs.get(openId)?.members ?? []) ids.add(u);
    ids.delete(me.id);
    if (!ids.size) return;
    const r = await http.presence([...ids].slice(0, 200)).catch(() => null);
    for (const p of r?.presence ?? []) presence.set(p.user, p);
    scheduleRender();
  }, 100);
}

function setConn(state) {
  const e = $('conn');
  e.dataset.state = state;
  e.textContent = state;
}

function onState({ state, code, reason }) {
  if (state === 'online') {
    const again = everOnline;
    everOnline = true;
    setConn('online');
    // After a reconnect the counts come from the list (§9.8); presence is not synced.
    if (again) refreshConvs();
    askPresence();
    markRead();
  } else if (state === 'connecting' || state === 'offline') {
    setConn(everOnline ? 'reconnecting' : 'connecting');
  } else if (state === 'closed') {
    setConn('offline');
    if (reason === 'unauthorized' || code === 1008) logout('Your session ended: log in again.');
  }
}

function startClient(token) {
  const seeds = {};
  for (const c of convs.values()) seeds[c.id] = c.last_seq ?? 0;
  client = new ChatClient({ url: location.origin, token, cursors: seeds, backoff: { baseMs: 300, maxMs: 10000 } });
  client.on('state', onState);
  client.on('message', onMessage);
  client.on('joined', (f) => { upsertConv(f.conversation); if (f.conversation.kind === 'direct') fetchUser(peerOf(f.conversation)); scheduleRender(); askPresence(); });
  client.on('left', (f) => { convs.delete(f.conv); if (openId === f.conv) openId = null; scheduleRender(); });
  client.on('read', (f) => {
    const c = convs.get(f.conv);
    if (!c) return;
    c._reads.set(f.user, Math.max(c._reads.get(f.user) ?? 0, f.seq));
    if (f.user === me.id) c.read_seq = Math.max(c.read_seq ?? 0, f.seq);
    scheduleRender();
  });
  client.on('unread', (f) => {
    const c = convs.get(f.conv);
    if (c) { c.unread = f.unread; c.mentions_unread = f.mentions_unread; }
    scheduleRender();
  });
  client.on('typing', (f) => {
    const c = convs.get(f.conv);
    if (!c || f.user === me.id) return;
    c._typing.set(f.user, Date.now() + TYPING_MS);
    scheduleRender();
    setTimeout(scheduleRender, TYPING_MS + 50);
  });
  client.on('presence', (f) => { presence.set(f.user, f); scheduleRender(); });
  client.on('request', () => loadContacts());
  client.on('event', (e) => { if (e.event?.kind === 'unfriended') loadContacts(); });
  client.on('settings', (s) => {
    const c = convs.get(s.conv);
    if (c) { c.muted_until = s.muted_until; c.pinned = s.pinned; c.archived = s.archived; }
    scheduleRender();
  });
  // A sync after a reconnect brings messages as they stand now *and* the entries that
  // changed them: take the open conversation's newest page again so reactions are not
  // counted twice.
  client.on('synced', (list) => {
    for (const s of list) {
      const c = convs.get(s.id);
      if (!c) { refreshConvs(); continue; }
      if (c._loaded && everOnline) refreshNewest(c);
    }
  });
  client.connect();
}

async function refreshNewest(c) {
  const page = await http.history(c.id, { limit: PAGE }).catch(() => null);
  if (!page) return;
  for (const m of page.messages) if (!isFolding(m)) c._messages.set(m.seq, m);
  scheduleRender();
}

// Sign in and out -----------------------------------------------------------------------

async function start(token) {
  http.token = token;
  try {
    me = await http.me();
  } catch (e) {
    if (e.status === 401 || e.status === 403) { logout(); return; }
    showAuth(`Cannot reach the server: ${e.message}`);
    return;
  }
  rememberUser(me);
  sessionStorage.setItem(TOKEN_KEY, token);
  $('auth').hidden = true;
  $('app').hidden = false;
  $('me').textContent = me.display_name || me.username;
  $('me').dataset.username = me.username;
  await Promise.all([loadConvs(), loadContacts()]);
  startClient(token);
  render();
}

function showAuth(message) {
  $('app').hidden = true;
  $('auth').hidden = false;
  $('auth-error').textContent = message ?? '';
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  client?.close();
  client = null;
  me = null;
  convs.clear(); outbox.clear(); presence.clear();
  contacts = { contacts: [], incoming: [], outgoing: [] };
  compose = null;
  openId = null;
  everOnline = false;
  http.token = undefined;
  showAuth(message);
}

async function authenticate(register) {
  const username = $('auth-username').value.trim();
  const password = $('auth-password').value;
  const display = $('auth-display').value.trim();
  $('auth-error').textContent = '';
  try {
    const r = register ? await http.register(username, password, display || undefined) : await http.login(username, password);
    await start(r.token);
  } catch (e) {
    $('auth-error').textContent = e.message || String(e);
  }
}

function showTab(name) {
  $('tab-chats').classList.toggle('active', name === 'chats');
  $('tab-people').classList.toggle('active', name === 'people');
  $('chats-panel').hidden = name !== 'chats';
  $('people-panel').hidden = name !== 'people';
  if (name === 'people') loadContacts();
}

// Wiring --------------------------------------------------------------------------------

function wire() {
  $('auth-form').addEventListener('submit', (e) => { e.preventDefault(); authenticate(false); });
  $('auth-register').addEventListener('click', () => {
    if ($('auth-form').reportValidity()) authenticate(true);
  });
  $('logout').addEventListener('click', () => logout());
  $('tab-chats').addEventListener('click', () => showTab('chats'));
  $('tab-people').addEventListener('click', () => showTab('people'));
  $('back').addEventListener('click', () => { openId = null; scheduleRender(); });

  $('search-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const q = $('user-search').value.trim();
    showError('people-error');
    if (!q) { $('search-results').replaceChildren(); return; }
    try {
      const { users: found } = await http.searchUsers(q);
      found.forEach(rememberUser);
      const friends = new Set((contacts.contacts ?? []).map((c) => c.user));
      const asked = new Set((contacts.outgoing ?? []).map((r) => r.to));
      $('search-results').replaceChildren(...found.filter((u) => u.id !== me.id).map((u) => el('li', {
        class: 'person', testid: 'search-result', data: { user: String(u.id), username: u.username },
      }, avatar(u.display_name || u.username, u.avatar_url),
      el('span', { class: 'name', text: u.display_name || u.username }),
      el('span', { class: 'note', text: `@${u.username}` }),
      el('button', { type: 'button', testid: 'btn-chat', text: 'Chat', onclick: () => startDirect(u.id) }),
      friends.has(u.id) ? el('span', { class: 'note', text: 'contact' })
        : asked.has(u.id) ? el('span', { class: 'note', text: 'requested' })
          : el('button', { type: 'button', testid: 'btn-add-friend', text: 'Add friend', onclick: (ev) => {
            ev.target.disabled = true;
            answer(() => http.friendRequest(u.id));
          } }))));
      if (!found.length) showError('people-error', new Error('nobody found'));
    } catch (err) { showError('people-error', err); }
  });

  $('new-group').addEventListener('click', () => { $('group-form').hidden = false; $('group-title').focus(); });
  $('group-cancel').addEventListener('click', () => { $('group-form').hidden = true; });
  $('group-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    showError('group-error');
    try {
      const names = $('group-members').value.split(/[\s,]+/).map((s) => s.trim().replace(/^@/, '')).filter(Boolean);
      const ids = [];
      for (const n of names) {
        const u = await findUser(n);
        if (!u) throw new Error(`no user ${n}`);
        ids.push(u.id);
      }
      const { conversation } = await http.createGroup($('group-title').value.trim(), ids);
      upsertConv(conversation);
      $('group-form').reset();
      $('group-form').hidden = true;
      openConv(conversation.id);
    } catch (err) { showError('group-error', err); }
  });

  $('members-toggle').addEventListener('click', () => {
    const panel = $('members-panel');
    panel.hidden = !panel.hidden;
    askPresence();
    scheduleRender();
  });
  $('add-member-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('add-member').value.trim().replace(/^@/, '');
    if (!name) return;
    await groupCall(async () => {
      const u = await findUser(name);
      if (!u) throw new Error(`no user ${name}`);
      const r = await http.addMembers(openId, [u.id]);
      $('add-member').value = '';
      return r;
    });
  });
  $('rename-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const title = $('rename-input').value.trim();
    if (!title) return;
    await groupCall(async () => {
      const r = await http.rename(openId, title);
      $('rename-input').value = '';
      return r;
    });
  });
  $('leave').addEventListener('click', async () => {
    const id = openId;
    try {
      await http.leave(id);
      convs.delete(id);
      openId = null;
      scheduleRender();
    } catch (err) { showError('members-error', err); }
  });
  $('mute').addEventListener('click', async () => {
    const c = convs.get(openId);
    if (!c) return;
    try {
      const { conversation } = await http.settings(c.id, { muted_until: isMuted(c) ? null : 'forever' });
      upsertConv(conversation);
      scheduleRender();
    } catch (err) { showError('composer-error', err); }
  });

  $('pin').addEventListener('click', async () => {
    const c = convs.get(openId);
    if (!c) return;
    try {
      const { conversation } = await http.settings(c.id, { pinned: !c.pinned });
      upsertConv(conversation);
      scheduleRender();
    } catch (err) { showError('composer-error', err); }
  });
  $('composer').addEventListener('submit', (e) => { e.preventDefault(); submitComposer(); });
  $('composer-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); submitComposer(); }
    if (e.key === 'Escape') endCompose();
  });
  $('composer-input').addEventListener('input', onComposerInput);
  $('compose-cancel').addEventListener('click', endCompose);

  $('messages').addEventListener('scroll', () => {
    const c = convs.get(openId);
    if (c && $('messages').scrollTop < 60 && !c._historyDone) loadOlder(c);
  });
  document.addEventListener('visibilitychange', () => markRead());
  window.addEventListener('focus', () => markRead());
  window.addEventListener('online', () => client?.connect());
  window.addEventListener('offline', () => setConn('offline'));
  setInterval(scheduleRender, 30000); // relative times and typing expiry
}

wire();
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) start(saved); else showAuth();
