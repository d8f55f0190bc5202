// Connections: a live table of every open connection, from the stats
// topic. Filter, sort, and pages of 100 rows, so 10,000 connections cost
// 100 rows of DOM; rows are kept by connection id and updated in place, so
// focus and scrolling survive each report. A connection that closes is
// missing from the next report and its row goes. Operators can deny a
// connection's booking or revoke its subject (POST through /ui/api/), from
// a row's Actions menu.
//
// Rates are each connection's bytes per second since the previous report
// (the first report shows none); last activity is the server's. Rows of
// the user's own subject say "(you)", and the page's own live connection
// "(this page)": neither offers Revoke subject (it would end the user's
// own views and sessions). While the pointer is on the table, reports are
// held (rows do not move under it) for at most pauseMax ms after the last
// pointer movement. The filter, sort and page are kept in the URL
// (?q=&sort=&dir=&page=, history.replaceState).

import { api, atLeast, byId, h, fmtBytes, fmtCount, fmtTime, fmtShortTime, parseTime, debounce, showMessage, emptyRow, fmtRate, subject } from '../util.js';
import { subscribeStats, dropTotal } from '../stats.js';
import { liveConnections } from '../live.js';
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

let conns = []; // the latest report, as rows
let received = false;
let filter = [];
let sortKey = 'since';
let sortDir = 1;
let page = 0;
const rowEls = new Map(); // id → {tr, cells, key}
let counters = new Map(); // id → {bytesIn, bytesOut, at}: the previous report's, for rates

const sorters = {
  topic: (r) => r.topic, prefix: (r) => r.prefix, sub: (r) => r.sub, booking: (r) => r.booking,
  remote: (r) => r.remote, ua: (r) => r.ua, since: (r) => r.since, expires: (r) => r.expires,
  in: (r) => r.bytesIn, out: (r) => r.bytesOut, drops: (r) => r.drops,
  rate: (r) => (r.rateIn ?? -1) + (r.rateOut ?? 0), active: (r) => r.active,
};

// --- the view's state in the URL ---

const query = new URLSearchParams(location.search);
if (sorters[query.get('sort')]) {
  sortKey = query.get('sort');
  sortDir = query.get('dir') === 'desc' ? -1 : 1;
}
filterInput.value = query.get('q') || '';
filter = filterInput.value.toLowerCase().split(/\s+/).filter(Boolean);
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

function toRow(c, receivedAt, mine) {
  const scopes = (c.scopes || []).join(' ');
  const row = {
    id: String(c.id),
    num: Number(c.id),
    topic: c.topic || '', prefix: c.prefix || '', scopes, sub: c.sub || '', booking: c.booking_id || '',
    remote: c.remote_addr || '', ua: c.user_agent || '',
    since: parseTime(c.connected_at) ?? 0, expires: parseTime(c.expires_at) ?? Infinity,
    msgsIn: c.messages_in || 0, bytesIn: c.bytes_in || 0, msgsOut: c.messages_out || 0, bytesOut: c.bytes_out || 0,
    drops: dropTotal(c), dropDetail: Object.entries(c.drops || {}).filter(([, n]) => n > 0).map(([k, n]) => `${k}: ${n}`).join(', '),
    active: parseTime(c.last_activity) ?? 0,
    rateIn: null, rateOut: null,
  };
  const prev = counters.get(row.id);
  const dt = prev ? (receivedAt - prev.at) / 1000 : 0;
  if (dt > 0.2) {
    row.rateIn = Math.max(0, row.bytesIn - prev.bytesIn) / dt;
    row.rateOut = Math.max(0, row.bytesOut - prev.bytesOut) / dt;
  } else if (prev) { // reports close together: keep the last rates
    row.rateIn = prev.rateIn;
    row.rateOut = prev.rateOut;
  }
  row.own = own(row, mine);
  row.hay = [row.topic, row.prefix, scopes, row.sub, row.booking, row.remote, row.ua].join('\n').toLowerCase();
  return row;
}

let held = null; // a report held while the table is paused: [report, receivedAt]

function onReport(report, receivedAt = Date.now()) {
  if (paused()) {
    held = [report, receivedAt];
    resumeIfDue(); // shows that it is paused, and when to look again
    return;
  }
  apply(report, receivedAt);
}

function apply(report, receivedAt) {
  const mine = liveConnections();
  conns = report.map((c) => toRow(c, receivedAt, mine));
  const next = new Map();
  for (const r of conns) {
    const prev = counters.get(r.id);
    // A rate's base moves on only when its interval was long enough.
    next.set(r.id, prev && (receivedAt - prev.at) <= 200
      ? prev : { bytesIn: r.bytesIn, bytesOut: r.bytesOut, at: receivedAt, rateIn: r.rateIn, rateOut: r.rateOut });
  }
  counters = next;
  const first = !received;
  received = true;
  render();
  // For tests and profiling: when the first report was on screen.
  if (first) performance.mark('connections-first-report');
}

function visibleRows() {
  let rows = conns;
  if (filter.length > 0) rows = rows.filter((r) => filter.every((t) => r.hay.includes(t)));
  const key = sorters[sortKey];
  const dir = sortDir;
  // Plain comparisons (no locale collation): fast enough to sort 10,000
  // rows on every report.
  return rows.slice().sort((a, b) => {
    const x = key(a);
    const y = key(b);
    const c = x < y ? -1 : x > y ? 1 : 0;
    return c * dir || (a.since - b.since) || (a.num - b.num);
  });
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
  const rows = visibleRows();
  const pages = Math.max(1, Math.ceil(rows.length / pageSize));
  if (page >= pages) page = pages - 1;
  const shown = rows.slice(page * pageSize, (page + 1) * pageSize);

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
    emptyRow(tbody, !received ? 'Waiting for the first report…' : conns.length === 0 ? 'No open connections.' : 'No connection matches the filter.');
  }
  if (focusedRow && !focusedRow.isConnected) region.focus(); // its connection closed

  const from = rows.length === 0 ? 0 : page * pageSize + 1;
  const to = Math.min(rows.length, (page + 1) * pageSize);
  let text = `Showing ${fmtCount(from)}–${fmtCount(to)} of ${fmtCount(rows.length)} connections`;
  if (rows.length !== conns.length) text += ` (filtered from ${fmtCount(conns.length)})`;
  if (!received) text = 'Waiting for the first report…';
  if (countEl.textContent !== text) countEl.textContent = text;
  countEl.dataset.total = String(conns.length);
  countEl.dataset.shown = String(rows.length);
  pageEl.textContent = `Page ${page + 1} of ${pages}`;
  prevBtn.disabled = page === 0;
  nextBtn.disabled = page >= pages - 1;
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
    const [report, at] = held;
    held = null;
    apply(report, at);
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

filterInput.addEventListener('input', debounce(() => {
  filter = filterInput.value.toLowerCase().split(/\s+/).filter(Boolean);
  page = 0;
  render();
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
    render();
  });
}

prevBtn.addEventListener('click', () => {
  page = Math.max(0, page - 1);
  render();
  if (prevBtn.disabled) nextBtn.focus();
});
nextBtn.addEventListener('click', () => {
  page++;
  render();
  if (nextBtn.disabled) prevBtn.focus();
});

tbody.addEventListener('click', async (ev) => {
  const btn = ev.target.closest('button[data-action]');
  if (!btn) return;
  const value = btn.dataset.value;
  const row = conns.find((r) => r.id === btn.closest('tr').dataset.connId);
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

subscribeStats(onReport);
