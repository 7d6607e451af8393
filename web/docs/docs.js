// A small viewer of the node's OpenAPI document (/api/v1/openapi.json): operations by
// tag, with their parameters, bodies, answers and webhooks. Everything from the
// document is written as text (textContent), never as HTML.

const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
};

let doc = null;

/** The schema a `$ref` names, or the schema itself. */
function resolve(schema, seen = new Set()) {
  if (!schema || !schema.$ref) return schema ?? {};
  const name = schema.$ref.split('/').pop();
  if (seen.has(name)) return { type: name };
  seen.add(name);
  return resolve(doc.components?.schemas?.[name] ?? {}, seen);
}

/** A short type text: `string`, `[Message]`, `integer (int64)`, `"a" | "b"`. */
function typeOf(schema) {
  if (!schema) return '';
  if (schema.$ref) return schema.$ref.split('/').pop();
  for (const key of ['oneOf', 'anyOf', 'allOf']) {
    if (schema[key]) return schema[key].map(typeOf).join(key === 'allOf' ? ' & ' : ' | ');
  }
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(' | ');
  const t = Array.isArray(schema.type) ? schema.type.join(' | ') : schema.type ?? 'any';
  if (t.includes('array')) return `[${typeOf(schema.items)}]`;
  return schema.format ? `${t} (${schema.format})` : t;
}

/** A table of an object schema's fields, nested one level for `$ref`ed objects. */
function fields(schema, depth = 0) {
  const s = resolve(schema);
  const props = s.properties ?? {};
  const names = Object.keys(props);
  if (names.length === 0) return el('p', { class: 'type', text: typeOf(schema) });
  const required = new Set(s.required ?? []);
  const table = el('table', {}, el('tr', {}, el('th', { text: 'field' }), el('th', { text: 'type' }), el('th', { text: 'about' })));
  for (const n of names) {
    const p = props[n];
    const about = el('td', { text: p.description ?? resolve(p).description ?? '' });
    table.append(el('tr', {},
      el('td', {}, el('code', { text: n }), required.has(n) ? el('span', { class: 'req', text: ' required' }) : null),
      el('td', { class: 'type', text: typeOf(p) }),
      about));
    const inner = resolve(p.items ?? p);
    if (depth < 1 && inner.properties && (p.$ref || p.items?.$ref)) about.append(fields(p.items ?? p, depth + 1));
  }
  return table;
}

function operation(path, method, op) {
  const security = op.security ?? doc.security ?? [];
  const auth = security.length === 0 ? 'no token' : (op.tags ?? []).includes('service') ? 'service key' : 'bearer token';
  const body = el('div', { class: 'body' });
  if (op.description) body.append(el('p', { text: op.description }));
  const params = op.parameters ?? [];
  if (params.length) {
    const t = el('table', {}, el('tr', {}, el('th', { text: 'parameter' }), el('th', { text: 'in' }), el('th', { text: 'type' }), el('th', { text: 'about' })));
    for (const p of params) {
      t.append(el('tr', {},
        el('td', {}, el('code', { text: p.name }), p.required ? el('span', { class: 'req', text: ' required' }) : null),
        el('td', { text: p.in }), el('td', { class: 'type', text: typeOf(p.schema) }), el('td', { text: p.description ?? '' })));
    }
    body.append(el('h4', { text: 'Parameters' }), t);
  }
  const req = op.requestBody?.content;
  if (req) {
    for (const [type, c] of Object.entries(req)) {
      body.append(el('h4', { text: `Body (${type})${op.requestBody.required ? '' : ', optional'}: ${typeOf(c.schema)}` }), fields(c.schema));
    }
  }
  const answers = el('table', {}, el('tr', {}, el('th', { text: 'status' }), el('th', { text: 'answer' }), el('th', { text: 'body' })));
  for (const [status, r] of Object.entries(op.responses ?? {})) {
    const schema = Object.values(r.content ?? {})[0]?.schema;
    answers.append(el('tr', {}, el('td', {}, el('code', { text: status })), el('td', { text: r.description ?? '' }), el('td', { class: 'type', text: schema ? typeOf(schema) : '' })));
  }
  body.append(el('h4', { text: 'Answers' }), answers);
  const d = el('details', { class: 'op', 'data-search': `${method} ${path} ${(op.tags ?? []).join(' ')} ${op.summary ?? ''} ${op.description ?? ''}`.toLowerCase() },
    el('summary', {},
      el('span', { class: `method ${method}`, text: method }),
      el('span', { class: 'path', text: path }),
      el('span', { class: 'summary', text: op.summary ?? '' }),
      el('span', { class: 'auth', text: auth })),
    body);
  return d;
}

function render() {
  document.getElementById('title').textContent = `${doc.info?.title ?? 'API'} ${doc.info?.version ?? ''}`;
  document.getElementById('about').textContent = doc.info?.description ?? '';
  const byTag = new Map((doc.tags ?? []).map((t) => [t.name, { about: t.description ?? '', ops: [] }]));
  const methods = ['get', 'post', 'put', 'patch', 'delete', 'head'];
  const collect = (paths, label) => {
    for (const [path, item] of Object.entries(paths ?? {})) {
      for (const m of methods) {
        if (!item[m]) continue;
        const tag = item[m].tags?.[0] ?? 'other';
        if (!byTag.has(tag)) byTag.set(tag, { about: '', ops: [] });
        byTag.get(tag).ops.push(operation(label ? `${label}: ${path}` : path, m, item[m]));
      }
    }
  };
  collect(doc.paths, '');
  collect(doc.webhooks, 'webhook');
  const main = document.getElementById('ops');
  const toc = document.getElementById('toc');
  main.replaceChildren();
  for (const [tag, { about, ops }] of byTag) {
    if (ops.length === 0) continue;
    toc.append(el('a', { href: `#tag-${tag}`, text: `${tag} (${ops.length})` }));
    main.append(el('h2', { id: `tag-${tag}`, text: tag }), el('p', { text: about }), ...ops);
  }
}

document.getElementById('filter').addEventListener('input', (e) => {
  const words = e.target.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const d of document.querySelectorAll('details.op')) {
    d.hidden = !words.every((w) => d.dataset.search.includes(w));
  }
});

fetch('/api/v1/openapi.json')
  .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`${r.status}`))))
  .then((d) => { doc = d; render(); })
  .catch((e) => { document.getElementById('ops').textContent = `Could not load /api/v1/openapi.json: ${e.message}`; });
