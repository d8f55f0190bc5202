// Audit log (admins): one page of events at a time, oldest first. "Next
// page" is a real link (?after=<the last id shown>), so the browser's
// history and bookmarks work.

import { api, byId, h, url, fmtCount, timeEl, emptyRow, showMessage, snapshotBar } from '../util.js';

const pageSize = 100;
const params = new URLSearchParams(location.search);
const after = /^\d+$/.test(params.get('after') || '') ? params.get('after') : '';

async function load() {
  const tbody = byId('audit-rows');
  const next = byId('audit-next');
  try {
    const q = { limit: String(pageSize) };
    if (after) q.after = after;
    const res = await api('/api/v1/audit', { query: q });
    const events = res.events || [];
    stamp();
    showMessage(byId('audit-message'), '');
    byId('audit-count').textContent = events.length
      ? `Events ${fmtCount(events[0].id)} to ${fmtCount(events[events.length - 1].id)}${after ? ` (after ${fmtCount(Number(after))})` : ''}`
      : after ? 'No more events.' : 'No events yet.';
    if (events.length === 0) emptyRow(tbody, after ? 'No events after this point.' : 'No events yet.');
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
    if (events.length === pageSize) {
      next.href = url('/ui/audit') + '?after=' + encodeURIComponent(String(res.next_after));
      next.hidden = false;
    } else next.hidden = true;
  } catch (err) {
    emptyRow(tbody, 'The audit log could not be read.');
    showMessage(byId('audit-message'), err, 'error');
  }
}

// The audit log is a snapshot, read again on Refresh.
const stamp = snapshotBar(document.querySelector('[data-snapshot="audit"]'), load);
load();
