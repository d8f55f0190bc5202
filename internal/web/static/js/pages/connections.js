// Connections: a live table of this node's open connections, one page of
// 100 rows at a time, from GET /ui/api/api/v1/connections: the server
// filters, sorts and pages, so a tab costs the rows it shows whatever the
// number of connections. The page asks for it at each notice on the
// stats/changes topic (about 50 bytes, at every stats period and soon
// after a connect or disconnect) and gives back the previous answer's
// cursor as since, so an answer carries in full only the rows that changed
// (the others by id): 100 idle rows cost a list of ids a notice. A row the
// page does not have (a view that changed, a connection that moved onto
// the page) is asked for in full at once. Rows are kept by connection id
// and updated in place, so focus and scrolling survive each answer.
// Operators can deny a connection's booking or revoke its subject (POST
// through /ui/api/), from a row's Actions menu.
//
// Rates are each connection's bytes per second, measured by the server
// between polls (— until measured); last activity is the server's. Rows of
// the user's own subject say "(you)", and the page's own live connection
// (on stats/changes) "(this page)":
// neither offers Revoke subject (it would end the user's own views and
// sessions). While the pointer is on the table, answers are held (rows do
// not move under it) for at most pauseMax ms after the last pointer
// movement. The filter, sort and page are kept in the URL
// (?q=&sort=&dir=&page=, history.replaceState).

import { api, atLeast, byId, h, fmtBytes, fmtCount, fmtTime, fmtShortTime, parseTime, debounce, showMessage, emptyRow, fmtRate, subject } from '../util.js';
import { dropTotal } from '../stats.js';
import { liveConnections, poll, subscribe } from '../live.js';
import { confirmAction, durationOptions, durationSeconds } from '../dialog.js';

const pageSize = 100;
const canOperate = atLeast('operator');
const pauseMax = 5000;

const tbody = byId('conn-rows');
const filterInput = byId('conn-filter');
const countEl = byId('conn-count');
const pageEl = byId('conn-page');
const prevBtn = byId('conn-prev');
const nextBtn = byId('conn-next');
const messageEl = byId('conn-message');
const region = tbody.closest('.table-wrap');
const pausedEl = byId('conn-paused');

const sortKeys = new Set(['topic', 'prefix', 'sub', 'booking', 'remote', 'ua', 'since', 'expires', 'in', 'out', 'drops', 'rate', 'active']);

let shownPage = null; // the answer on screen: {total, matched, page, pages, rows}
let received = false;
let sortKey = 'since';
let sortDir = 1;
let page = 0; // 0-based
const rowEls = new Map(); // id → {tr, cells, key}
let known = new Map(); // id → row: the rows of the latest answer, for deltas
let cursor = ''; // the latest answer's, for since; '' after a change of view

// --- the view's state in the URL ---

const query = new URLSearchParams(location.search);
if (sortKeys.has(query.get('sort'))) {
  sortKey = query.get('sort');
  sortDir = query.get('dir') === 'desc' ? -1 : 1;
}
filterInput.value = query.get('q') || '';
page = Math.max(0, (Number.parseInt(query.get('page') || '1', 10) || 1) - 1);
for (const th of document.querySelectorAll('th[aria-sort]')) {
  const key = th.querySelector('button.sort').dataset.sort;
  th.setAttribute('aria-sort', key === sortKey ? (sortDir === 1 ? 'ascending' : 'descending') : 'none');
}

function saveView() {
  const q = new URLSearchParams();
  if (filterInput.value.trim()) q.set('q', filterInput.value.trim());
  if (sortKey !== 'since' || sortDir !== 1) {
    q.set('sort', sortKey);
    q.set('dir', sortDir === 1 ? 'asc' : 'desc');
  }
  if (page > 0) q.set('page', String(page + 1));
  const s = q.toString();
  const next = location.pathname + (s ? '?' + s : '');
  if (next !== location.pathname + location.search) history.replaceState(null, '', next);
}

// own tells whether a connection is the user's: 'page' (one of this page's
// live connections), 'you' (the user's subject) or ''.
function own(r, mine) {
  if (!subject || r.sub !== subject) return '';
  if (r.prefix === 'session' && mine.some((m) => m.topic === r.topic && Math.abs(m.openedAt - r.since) < 3000)) return 'page';
  return 'you';
}

function toRow(c) {
  const scopes = (c.scopes || []).join(' ');
  return {
    id: String(c.id),
    topic: c.topic || '', prefix: c.prefix || '', scopes, sub: c.sub || '', booking: c.booking_id || '',
    remote: c.remote_addr || '', ua: c.user_agent || '',
    since: parseTime(c.connected_at) ?? 0, expires: parseTime(c.expires_at) ?? Infinity,
    msgsIn: c.messages_in || 0, bytesIn: c.bytes_in || 0, msgsOut: c.messages_out || 0, bytesOut: c.bytes_out || 0,
    drops: dropTotal(c), dropDetail: Object.entries(c.drops || {}).filter(([, n]) => n > 0).map(([k, n]) => `${k}: ${n}`).join(', '),
    active: parseTime(c.last_activity) ?? 0,
    rateIn: c.rate_in ?? null, rateOut: c.rate_out ?? null,
  };
}

// viewQuery is the request of the view on screen.
function viewQuery(withCursor) {
  const q = { size: String(pageSize), page: String(page + 1), sort: sortKey, dir: sortDir === 1 ? 'asc' : 'desc' };
  const f = filterInput.value.trim();
  if (f) q.q = f;
  if (withCursor && cursor) q.since = cursor;
  return q;
}

let viewGen = 0; // bumped by every change of view: older answers are not shown

// fetchView asks for the view on screen and shows it (or holds it while
// the table is paused).
async function fetchView() {
  const gen = viewGen;
  let ans = await api('/api/v1/connections', { query: viewQuery(true) });
  if (gen !== viewGen) return;
  let next = merge(ans);
  if (next === null) { // a row we do not have: the whole page
    cursor = '';
    ans = await api('/api/v1/connections', { query: viewQuery(false) });
    if (gen !== viewGen) return;
    next = merge(ans);
  }
  cursor = ans.cursor;
  page = ans.page - 1;
  const mine = liveConnections();
  for (const r of next.rows) r.own = own(r, mine);
  known = new Map(next.rows.map((r) => [r.id, r]));
  if (paused()) {
    held = next;
    resumeIfDue(); // shows that it is paused, and when to look again
    return;
  }
  apply(next);
}

// merge returns the answer's page with its rows (those it has in full,
// the others as known), or null when a row is neither.
function merge(ans) {
  const full = new Map(ans.rows.map((c) => [String(c.id), c]));
  const rows = [];
  for (const id of ans.ids) {
    const c = full.get(id);
    const r = c ? toRow(c) : known.get(id);
    if (!r) return null;
    rows.push(r);
  }
  return { total: ans.total, matched: ans.matched, page: ans.page - 1, pages: ans.pages, rows };
}

let held = null; // an answer held while the table is paused

function apply(next) {
  shownPage = next;
  const first = !received;
  received = true;
  render();
  // For tests and profiling: when the first answer was on screen.
  if (first) performance.mark('connections-first-report');
}

// cellTexts are the texts a row shows, in column order; a row is
// rebuilt only when they change.
function cellTexts(r) {
  return [
    r.topic, r.prefix, r.scopes, r.sub || '—', r.booking || '—', r.remote, r.ua,
    fmtShortTime(r.since), r.expires === Infinity ? 'never' : fmtShortTime(r.expires),
    `${fmtCount(r.msgsIn)} · ${fmtBytes(r.bytesIn)}`, `${fmtCount(r.msgsOut)} · ${fmtBytes(r.bytesOut)}`,
    fmtCount(r.drops),
    r.rateIn === null ? '—' : `${fmtRate(r.rateIn)} · ${fmtRate(r.rateOut)} B`,
    r.active ? fmtShortTime(r.active) : '—',
  ];
}

const cellClasses = ['topic', '', '', 'wrap', 'wrap', 'nowrap', 'ua', 'nowrap', 'nowrap', 'num', 'num', 'num', 'num', 'nowrap'];
const topicColumn = 0;
const subColumn = 3;
const uaColumn = 6;

// setTopic writes a topic with a line-break opportunity after each "/",
// so long topics wrap between their segments.
function setTopic(cell, topic) {
  const parts = topic.split('/');
  cell.replaceChildren(...parts.flatMap((p, i) => (i < parts.length - 1 ? [p + '/', h('wbr')] : [p])));
}

function buildRow(r, texts) {
  const tr = h('tr', { 'data-testid': 'conn-row', dataset: { connId: r.id } });
  if (r.own) tr.dataset.own = r.own;
  // cells are where each column's text goes: the user agent is cut to
  // one line (in a span, as a table cell cannot be), with a tooltip.
  const cells = [];
  for (let i = 0; i < texts.length; i++) {
    const td = h('td', { class: cellClasses[i] || undefined });
    if (i === uaColumn) {
      const span = h('span', { class: 'ellipsis' });
      td.append(span);
      cells.push(span);
    } else cells.push(td);
    tr.append(td);
  }
  if (canOperate) {
    const actions = h('div', { class: 'row-actions' });
    if (r.booking && !r.own) {
      actions.append(h('button', {
        type: 'button', class: 'small danger', 'data-testid': 'conn-deny', dataset: { action: 'deny', value: r.booking },
        'aria-label': `Deny booking ${r.booking}`, text: 'Deny booking',
      }));
    }
    if (r.sub && !r.own) {
      actions.append(h('button', {
        type: 'button', class: 'small danger', 'data-testid': 'conn-revoke', dataset: { action: 'revoke', value: r.sub },
        'aria-label': `Revoke subject ${r.sub}`, text: 'Revoke subject',
      }));
    }
    tr.append(h('td', {}, actions.children.length === 0
      ? h('span', { class: 'muted', text: r.own === 'page' ? 'this page' : r.own ? 'yours' : '—' })
      : h('details', { class: 'row-menu', 'data-testid': 'conn-menu' },
        h('summary', { 'aria-label': `Actions for the connection on ${r.topic}`, text: 'Actions ▾' }), actions)));
  }
  return { tr, cells, texts: [], key: rowKey(r) };
}

// rowKey changes when a row's actions do: it is then built again.
function rowKey(r) {
  return `${r.booking}\n${r.sub}\n${r.own}`;
}

function updateRow(entry, r, texts) {
  for (let i = 0; i < texts.length; i++) {
    if (entry.texts[i] === texts[i]) continue;
    if (i === topicColumn) setTopic(entry.cells[i], texts[i]);
    else if (i === subColumn && r.own) entry.cells[i].textContent = `${texts[i]} (${r.own === 'page' ? 'this page' : 'you'})`;
    else entry.cells[i].textContent = texts[i];
  }
  entry.texts = texts;
  entry.cells[uaColumn].title = r.ua;
  entry.cells[7].title = fmtTime(r.since);
  entry.cells[8].title = r.expires === Infinity ? '' : fmtTime(r.expires);
  entry.cells[11].title = r.dropDetail;
  entry.cells[13].title = r.active ? fmtTime(r.active) : '';
}

function render() {
  const ans = shownPage || { total: 0, matched: 0, page: 0, pages: 1, rows: [] };
  const shown = ans.rows;
  const focused = document.activeElement;
  const focusedRow = focused && tbody.contains(focused) ? focused.closest('tr') : null;
  const keep = new Set(shown.map((r) => r.id));
  for (const [id, entry] of rowEls) {
    if (!keep.has(id)) {
      entry.tr.remove();
      rowEls.delete(id);
    }
  }
  const emptyTr = tbody.querySelector('tr.empty');
  if (shown.length > 0 && emptyTr) emptyTr.remove();
  let at = tbody.firstElementChild;
  for (const r of shown) {
    const texts = cellTexts(r);
    let entry = rowEls.get(r.id);
    if (entry && entry.key !== rowKey(r)) { // its buttons changed
      entry.tr.remove();
      rowEls.delete(r.id);
      entry = undefined;
    }
    if (!entry) {
      entry = buildRow(r, texts);
      rowEls.set(r.id, entry);
    }
    updateRow(entry, r, texts);
    if (at !== entry.tr) tbody.insertBefore(entry.tr, at); // moves only rows out of place
    else at = at.nextElementSibling;
  }
  if (shown.length === 0) {
    emptyRow(tbody, !received ? 'Waiting for the first report…' : ans.total === 0 ? 'No open connections.' : 'No connection matches the filter.');
  }
  if (focusedRow && !focusedRow.isConnected) region.focus(); // its connection closed

  const from = shown.length === 0 ? 0 : ans.page * pageSize + 1;
  const to = ans.page * pageSize + shown.length;
  let text = `Showing ${fmtCount(from)}–${fmtCount(to)} of ${fmtCount(ans.matched)} connections`;
  if (ans.matched !== ans.total) text += ` (filtered from ${fmtCount(ans.total)})`;
  if (!received) text = 'Waiting for the first report…';
  if (countEl.textContent !== text) countEl.textContent = text;
  countEl.dataset.total = String(ans.total);
  countEl.dataset.shown = String(ans.matched);
  pageEl.textContent = `Page ${ans.page + 1} of ${ans.pages}`;
  prevBtn.disabled = ans.page === 0;
  nextBtn.disabled = ans.page >= ans.pages - 1;
  if (received) saveView();
}

// --- pause on hover ---

let pointerOn = false;
let pointerAt = 0; // when the pointer last moved on the table
let resumeTimer = null;

function paused() {
  return pointerOn && Date.now() - pointerAt < pauseMax;
}

function resumeIfDue() {
  clearTimeout(resumeTimer);
  resumeTimer = null;
  if (paused()) {
    if (pointerOn) resumeTimer = setTimeout(resumeIfDue, Math.max(50, pauseMax - (Date.now() - pointerAt)));
    pausedEl.hidden = held === null;
    return;
  }
  pausedEl.hidden = true;
  if (held) {
    const next = held;
    held = null;
    apply(next);
  }
}

tbody.addEventListener('pointerenter', () => {
  pointerOn = true;
  pointerAt = Date.now();
  resumeIfDue();
});
tbody.addEventListener('pointermove', () => {
  pointerAt = Date.now();
  if (!resumeTimer) resumeIfDue();
});
tbody.addEventListener('pointerleave', () => {
  pointerOn = false;
  resumeIfDue();
});


// --- controls ---

const live = poll('connections', fetchView);
// Each notice (and each new connection to the topic, which may have missed
// some) asks for the page again.
subscribe('stats/changes', { onMessage: () => live.now(), onOpen: () => live.now() });

// changeView asks for the view at once, the previous answers forgotten;
// then(…) runs once it is on screen (or failed).
function changeView() {
  viewGen++;
  cursor = '';
  held = null;
  return live.now();
}

filterInput.addEventListener('input', debounce(() => {
  page = 0;
  changeView();
}, 120));

for (const btn of document.querySelectorAll('button.sort')) {
  btn.addEventListener('click', () => {
    const key = btn.dataset.sort;
    if (key === sortKey) sortDir = -sortDir;
    else {
      sortKey = key;
      sortDir = 1;
    }
    for (const th of document.querySelectorAll('th[aria-sort]')) th.setAttribute('aria-sort', 'none');
    btn.closest('th').setAttribute('aria-sort', sortDir === 1 ? 'ascending' : 'descending');
    page = 0;
    changeView();
  });
}

prevBtn.addEventListener('click', async () => {
  page = Math.max(0, page - 1);
  await changeView();
  if (prevBtn.disabled) nextBtn.focus();
});
nextBtn.addEventListener('click', async () => {
  page++;
  await changeView();
  if (nextBtn.disabled) prevBtn.focus();
});

tbody.addEventListener('click', async (ev) => {
  const btn = ev.target.closest('button[data-action]');
  if (!btn) return;
  const value = btn.dataset.value;
  const row = known.get(btn.closest('tr').dataset.connId);
  const where = row ? ` (topic ${row.topic})` : '';
  showMessage(messageEl, '');
  if (btn.dataset.action === 'deny') {
    const done = await confirmAction({
      title: 'Deny booking',
      text: `Deny booking “${value}”${where}? Every connection with this booking is closed at once (4003), and new ones are refused until the denial expires.`,
      confirmLabel: 'Deny booking',
      fields: [{ name: 'for', label: 'Deny for', type: 'select', options: durationOptions, value: '24h' }],
      returnFocus: region,
      action: async (v) => {
        const exp = Math.floor(Date.now() / 1000) + durationSeconds(v.for);
        await api('/bids/deny', { method: 'POST', query: { bid: value, exp: String(exp) } });
      },
    });
    if (done) showMessage(messageEl, `Booking “${value}” denied: its connections are being closed.`);
  } else if (btn.dataset.action === 'revoke') {
    const done = await confirmAction({
      title: 'Revoke subject',
      text: `Revoke subject “${value}”${where}? Every connection whose token has this subject is closed at once (4003), and new ones are refused until the revocation expires.`,
      confirmLabel: 'Revoke subject',
      fields: [
        { name: 'for', label: 'Revoke for', type: 'select', options: durationOptions, value: '24h' },
        { name: 'reason', label: 'Reason (optional, recorded in the audit log)', type: 'text', value: '' },
      ],
      returnFocus: region,
      action: async (v) => {
        const body = { kind: 'subject', value, ttl: v.for };
        if (v.reason.trim()) body.reason = v.reason.trim();
        await api('/api/v1/revocations', { method: 'POST', json: body });
      },
    });
    if (done) showMessage(messageEl, `Subject “${value}” revoked: its connections are being closed.`);
  }
});

