// Helpers shared by the dashboard's pages: building elements, calling the
// dashboard API (/ui/api/…), formatting numbers and times, showing errors.

const body = document.body;

/** The public URL's path ("" or "/prefix"): put before every URL of ours. */
export const base = body.dataset.base || '';

/** The signed-in user's role: "viewer", "operator" or "admin". */
export const role = body.dataset.role || 'none';
/** The signed-in user's subject. */
export const subject = body.dataset.sub || '';

const roleRank = { none: 0, viewer: 1, operator: 2, admin: 3 };

/** Reports whether the user's role is at least r. The server checks again. */
export function atLeast(r) {
  return (roleRank[role] || 0) >= roleRank[r];
}

/** Returns an absolute path of ours under the public URL's path. */
export function url(path) {
  return base + path;
}

/** Returns the element with this id (throws if missing: a template bug). */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`element #${id} is missing`);
  return el;
}

/**
 * Builds an element. attrs: "class", "text", "dataset" (object), "hidden",
 * "disabled", "checked", "value", "type", event handlers as "onclick" etc.
 * (functions, attached with addEventListener), anything else as an
 * attribute. Children: nodes or strings (as text, never as HTML).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'hidden' || k === 'disabled' || k === 'checked' || k === 'value' || k === 'selected') el[k] = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** An error answer of the API: its status and its JSON error's code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Reads an error answer into an ApiError: the API's own message, verbatim. */
export async function apiError(res) {
  let code = `http_${res.status}`;
  let message = `${res.status} ${res.statusText}`.trim();
  try {
    const text = await res.text();
    try {
      const j = JSON.parse(text);
      if (j && j.error) {
        code = j.error.code || code;
        message = j.error.message || message;
      }
    } catch {
      if (text.trim()) message = text.trim().slice(0, 500);
    }
  } catch {
    // the body could not be read: keep the status line
  }
  return new ApiError(res.status, code, message);
}

/**
 * Calls the dashboard's own endpoints (path under /ui/api/, e.g. "/history"
 * or "/api/v1/jobs"). opts: method, json (a value to send as JSON), form
 * (an object to send form-encoded), query (an object or URLSearchParams).
 * Returns the parsed JSON answer, the text of a non-JSON answer, or null
 * (204). Throws ApiError for an error answer, or a TypeError when the
 * server cannot be reached.
 */
export async function api(path, opts = {}) {
  let target = url('/ui/api' + path);
  if (opts.query) {
    const q = opts.query instanceof URLSearchParams ? opts.query : new URLSearchParams(opts.query);
    const s = q.toString();
    if (s) target += (target.includes('?') ? '&' : '?') + s;
  }
  const init = { method: opts.method || 'GET', headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (opts.json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.json);
  } else if (opts.form !== undefined) {
    init.body = new URLSearchParams(opts.form);
  }
  const res = await fetch(target, init);
  if (!res.ok) throw await apiError(res);
  if (res.status === 204) return null;
  const type = res.headers.get('Content-Type') || '';
  if (type.includes('json')) return res.json();
  return res.text();
}

/** Shows a message in el; kind "error" or "ok". An ApiError shows its code too. */
export function showMessage(el, msg, kind = 'ok') {
  if (!msg) {
    el.replaceChildren();
    delete el.dataset.kind;
    delete el.dataset.code;
    return;
  }
  el.dataset.kind = kind;
  if (msg instanceof ApiError) {
    el.dataset.code = msg.code;
    el.replaceChildren(
      h('span', { 'data-testid': 'error-text', text: msg.message }),
      h('code', { class: 'error-code', text: `(${msg.code})` }));
    return;
  }
  delete el.dataset.code;
  el.replaceChildren(h('span', { 'data-testid': kind === 'error' ? 'error-text' : 'message-text', text: msg instanceof Error ? networkMessage(msg) : String(msg) }));
}

/** Says what a thrown error means to a person. */
export function networkMessage(err) {
  if (err instanceof ApiError) return err.message;
  if (err instanceof TypeError) return 'The server cannot be reached; check your connection and try again.';
  return err && err.message ? err.message : String(err);
}

const numberFormat = new Intl.NumberFormat('en-US');

/** 10000 → "10,000". */
export function fmtCount(n) {
  return numberFormat.format(n || 0);
}

/** Bytes with a binary unit, as the server shows them: "1.5 KiB". */
export function fmtBytes(n) {
  n = Number(n) || 0;
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let i = -1;
  do {
    n /= 1024;
    i++;
  } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(1)} ${units[i]}`;
}

/** A rate per second, short: "12.3", "4.5k", "1.2M". */
export function fmtRate(n) {
  if (!Number.isFinite(n)) return '0';
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  if (n >= 100) return n.toFixed(0);
  if (n >= 10) return n.toFixed(1);
  return String(Number(n.toFixed(2)));
}

/** Parses an RFC 3339 time; null for none, zero or unparsable. */
export function parseTime(s) {
  if (!s || s.startsWith('0001-01-01')) return null;
  const t = Date.parse(s);
  return Number.isNaN(t) ? null : t;
}

const pad = (n) => String(n).padStart(2, '0');

/** A time in local time, "2025-11-23 14:05:09"; "" for none. */
export function fmtTime(s) {
  const t = typeof s === 'number' ? s : parseTime(s);
  if (t === null || t === undefined) return '';
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A short local time: "14:05:09" today, else "11-23 14:05". */
export function fmtShortTime(s) {
  const t = typeof s === 'number' ? s : parseTime(s);
  if (t === null || t === undefined) return '';
  const d = new Date(t);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const y = d.getFullYear() === now.getFullYear() ? '' : `${d.getFullYear()}-`;
  return `${y}${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A <time> element for an RFC 3339 time, or the fallback text. */
export function timeEl(s, fallback = '—') {
  const t = typeof s === 'number' ? s : parseTime(s);
  if (t === null || t === undefined) return document.createTextNode(fallback);
  return h('time', { datetime: new Date(t).toISOString(), title: new Date(t).toISOString() }, fmtTime(t));
}

/** Calls fn at most once per wait ms, after the last call. */
export function debounce(fn, wait) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  };
}

/** The link path of a job's page. */
export function jobURL(id) {
  return url('/ui/jobs/' + encodeURIComponent(id));
}

/** Replaces the rows of a tbody with one "empty" row saying text. */
export function emptyRow(tbody, text) {
  const cols = tbody.closest('table').querySelectorAll('thead th').length || 1;
  tbody.replaceChildren(h('tr', { class: 'empty' }, h('td', { colspan: cols, text })));
}

/** A phase as a badge: the word itself, colour only as a second cue. */
export function phaseBadge(phase) {
  return h('span', { class: 'phase', dataset: { phase }, text: phase });
}

/** A state as a badge ("online", "running", "succeeded"…). */
export function stateBadge(state) {
  return h('span', { class: 'state', dataset: { state }, text: state.replaceAll('_', ' ') });
}

/** A duration in ms, short: "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min". */
export function fmtDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${pad(Math.floor(s % 60))} s`;
  return `${Math.floor(m / 60)} h ${pad(m % 60)} min`;
}

/** The time from start to end (or to now while going on), in ms; null without a start. */
export function elapsed(start, end) {
  const a = parseTime(start);
  if (a === null) return null;
  const b = parseTime(end);
  return Math.max(0, (b === null ? Date.now() : b) - a); // clocks of two machines may disagree
}

/**
 * Marks a list the live feed does not update as a snapshot: el (a
 * placeholder with data-snapshot="NAME") gets "Snapshot as of HH:MM:SS"
 * (data-testid NAME-as-of) and a Refresh button (NAME-refresh) that runs
 * load again. Returns stamp(), to call after each successful load.
 */
export function snapshotBar(el, load) {
  const name = el.dataset.snapshot;
  const when = h('span', { 'data-testid': `${name}-as-of`, text: 'Loading…' });
  const btn = h('button', { type: 'button', class: 'small', 'data-testid': `${name}-refresh`, text: 'Refresh' });
  el.replaceChildren(when, ' ', btn);
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    try {
      await load();
    } finally {
      btn.disabled = false;
    }
  });
  return () => {
    const d = new Date();
    when.textContent = `Snapshot as of ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}, not updated live.`;
  };
}

// Tables of class "cards" become one card per row at phone width (CSS,
// app.css): each cell shows its column's name, which it takes from the
// table's header into data-label as rows are added.
function labelCells(table) {
  const names = [...table.querySelectorAll('thead th')].map((th) => {
    const b = th.querySelector('button.sort');
    return (b ? b.textContent : th.textContent).trim();
  });
  const label = (tr) => {
    if (tr.classList.contains('empty')) return;
    [...tr.cells].forEach((td, i) => {
      if (!td.dataset.label && names[i]) td.dataset.label = names[i];
    });
  };
  for (const tbody of table.tBodies) {
    [...tbody.rows].forEach(label);
    new MutationObserver((records) => {
      for (const r of records) for (const n of r.addedNodes) if (n.nodeName === 'TR') label(n);
    }).observe(tbody, { childList: true });
  }
}
for (const table of document.querySelectorAll('table.cards')) labelCells(table);
