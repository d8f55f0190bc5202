// Audit log (admins): one page of events at a time, newest first
// (GET /api/v1/audit?order=desc), filtered by actor, action and time.
// "Newer" and "Older" are real links (?after=<newest id shown>,
// ?before=<oldest id shown>) that keep the filters, so the browser's
// history and bookmarks work. The time filters are local times in the URL
// (what the inputs hold) and sent to the API as RFC 3339.

import { api, byId, h, url, fmtCount, timeEl, emptyRow, showMessage, snapshotBar } from '../util.js';

const pageSize = 100;
const params = new URLSearchParams(location.search);
const idParam = (name) => (/^\d+$/.test(params.get(name) || '') ? params.get(name) : '');
const after = idParam('after');
const before = after ? '' : idParam('before');
// The filters, as the URL and the form hold them.
const filters = {};
for (const name of ['actor', 'action', 'since', 'until']) {
  filters[name] = (params.get(name) || '').trim();
  byId('audit-' + name).value = filters[name];
}

// pageLink is the URL of this view's page before or after an id.
function pageLink(name, id) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  if (name) q.set(name, String(id));
  const s = q.toString();
  return url('/ui/audit') + (s ? '?' + s : '');
}

// apiTime turns a datetime-local value (local time) into RFC 3339.
function apiTime(v) {
  const t = Date.parse(v);
  return Number.isNaN(t) ? '' : new Date(t).toISOString();
}

async function load() {
  const tbody = byId('audit-rows');
  const older = byId('audit-older');
  const newer = byId('audit-newer');
  try {
    const q = { order: 'desc', limit: String(pageSize) };
    if (after) q.after = after;
    if (before) q.before = before;
    if (filters.actor) q.actor = filters.actor;
    if (filters.action) q.action = filters.action;
    if (filters.since && apiTime(filters.since)) q.since = apiTime(filters.since);
    if (filters.until && apiTime(filters.until)) q.until = apiTime(filters.until);
    const res = await api('/api/v1/audit', { query: q });
    const events = res.events || [];
    stamp();
    showMessage(byId('audit-message'), '');
    const filtered = Object.values(filters).some(Boolean);
    byId('audit-count').textContent = events.length
      ? `Events ${fmtCount(events[0].id)} down to ${fmtCount(events[events.length - 1].id)}${filtered ? ' that match' : ''}`
      : filtered ? 'No event matches.' : after || before ? 'No more events.' : 'No events yet.';
    if (events.length === 0) emptyRow(tbody, filtered ? 'No event matches these filters.' : after || before ? 'No events past this point.' : 'No events yet.');
    else {
      tbody.replaceChildren(...events.map((e) => h('tr', { 'data-testid': 'audit-row', dataset: { id: String(e.id) } },
        h('td', { class: 'num', text: String(e.id) }),
        h('td', {}, timeEl(e.time)),
        h('td', { class: 'wrap', text: e.actor || '—' }),
        h('td', { text: e.action }),
        h('td', { class: 'wrap', text: e.target || '—' }),
        h('td', { class: 'wrap', text: e.reason || '' }),
        h('td', { class: 'wrap' }, e.detail === undefined ? '' : h('code', { text: JSON.stringify(e.detail) })))));
    }
    older.hidden = !res.older_before;
    if (res.older_before) older.href = pageLink('before', res.older_before);
    newer.hidden = !res.newer_after;
    if (res.newer_after) newer.href = pageLink('after', res.newer_after);
    byId('audit-first').href = pageLink('', 0);
  } catch (err) {
    emptyRow(tbody, 'The audit log could not be read.');
    showMessage(byId('audit-message'), err, 'error');
  }
}

// The audit log is a snapshot, read again on Refresh.
const stamp = snapshotBar(document.querySelector('[data-snapshot="audit"]'), load);
load();
