// Revocations: the active revocations (kind, value, reason, who, when,
// until), a form to add one (operators) and Remove (admins). Everything
// goes through the server's own API via /ui/api/.

import { api, atLeast, byId, h, fmtCount, fmtTime, timeEl, emptyRow, showMessage, snapshotBar } from '../util.js';
import { valueError, reasonError, durationError, parseGoDuration } from '../checks.js';
import { confirmAction } from '../dialog.js';

const tbody = byId('rev-rows');
const countEl = byId('rev-count');
const messageEl = byId('rev-message');
const isAdmin = atLeast('admin');

// No topic carries the revocations: the list is a snapshot, read again on
// Refresh (and after each change made here).
const stamp = snapshotBar(document.querySelector('[data-snapshot="rev"]'), () => load());

async function load() {
  try {
    const res = await api('/api/v1/revocations');
    const revs = (res.revocations || []).slice().sort((a, b) => (b.created_at || '').localeCompare(a.created_at || ''));
    countEl.textContent = `${fmtCount(revs.length)} active revocations`;
    stamp();
    if (revs.length === 0) {
      emptyRow(tbody, 'No active revocations.');
      return;
    }
    tbody.replaceChildren(...revs.map((r) => h('tr', { 'data-testid': 'rev-row', dataset: { kind: r.kind, value: r.value } },
      h('td', { text: r.kind }),
      h('td', { class: 'topic', text: r.value }),
      h('td', { class: 'wrap', text: r.reason || '—' }),
      h('td', { class: 'wrap', text: r.actor || '—' }),
      h('td', {}, timeEl(r.created_at)),
      h('td', {}, timeEl(r.expires_at)),
      isAdmin ? h('td', {}, h('button', {
        type: 'button', class: 'small danger', 'data-testid': 'rev-remove', dataset: { kind: r.kind, value: r.value },
        'aria-label': `Remove the ${r.kind} revocation of ${r.value}`, text: 'Remove',
      })) : null)));
  } catch (err) {
    countEl.textContent = '';
    emptyRow(tbody, 'The revocations could not be listed.');
    showMessage(messageEl, err, 'error');
  }
}

tbody.addEventListener('click', async (ev) => {
  const btn = ev.target.closest('button[data-testid="rev-remove"]');
  if (!btn) return;
  const { kind, value } = btn.dataset;
  showMessage(messageEl, '');
  const done = await confirmAction({
    title: 'Remove revocation',
    text: `Remove the ${kind} revocation of “${value}”? New connections with it are allowed again at once.`,
    confirmLabel: 'Remove',
    returnFocus: tbody.closest('.table-wrap'),
    action: () => api(`/api/v1/revocations/${encodeURIComponent(kind)}/${encodeURIComponent(value)}`, { method: 'DELETE' }),
  });
  if (done) {
    showMessage(messageEl, `The ${kind} revocation of “${value}” is removed.`);
    load();
  }
});

const form = document.getElementById('rev-form');
if (form) {
  const kind = byId('rev-kind');
  const value = byId('rev-value');
  const reason = byId('rev-reason');
  const ttl = byId('rev-ttl');
  const formErr = byId('rev-form-error');
  const set = (input, msg) => {
    byId(`${input.id}-error`).textContent = msg || '';
    input.setAttribute('aria-invalid', msg ? 'true' : 'false');
    return !msg;
  };
  const checkTTL = () => {
    let msg = durationError(ttl.value);
    if (!msg && parseGoDuration(ttl.value) <= 0) msg = 'expiry must be in the future and within ten years';
    return set(ttl, msg);
  };
  value.addEventListener('change', () => set(value, valueError('value', value.value)));
  reason.addEventListener('change', () => set(reason, reasonError(reason.value)));
  ttl.addEventListener('change', checkTTL);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showMessage(formErr, '');
    const bad = [];
    if (!set(value, valueError('value', value.value))) bad.push(value);
    if (!set(reason, reasonError(reason.value))) bad.push(reason);
    if (!checkTTL()) bad.push(ttl);
    if (bad.length) {
      bad[0].focus();
      return;
    }
    const body = { kind: kind.value, value: value.value, ttl: ttl.value };
    if (reason.value) body.reason = reason.value;
    const submit = form.querySelector('button[type="submit"]');
    submit.disabled = true;
    try {
      const r = await api('/api/v1/revocations', { method: 'POST', json: body });
      showMessage(formErr, `Revoked ${r.kind} “${r.value}” until ${fmtTime(r.expires_at)}.`, 'ok');
      value.value = '';
      reason.value = '';
      load();
    } catch (err) {
      showMessage(formErr, err, 'error');
    } finally {
      submit.disabled = false;
    }
  });
}

load();
