// Enrol an agent (operators): POST /api/v1/agents/enrol with the agent's
// id, labels and token lifetime, then show the token once with a copy
// button. The token is never put in a URL or stored by the page; the API
// audits the enrolment under the user's name and checks everything again.

import { api, byId, showMessage, fmtTime } from '../util.js';
import { durationError, parseGoDuration } from '../checks.js';

// The grammar of internal/jobproto (ValidAgentID, ValidLabelGrant).
const agentIDRe = /^[A-Za-z0-9._-]{1,64}$/;
const labelGrantRe = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}=(\*|[A-Za-z0-9._:/-]{0,128})$/;

const form = document.getElementById('enrol-form'); // absent for viewers
if (form) setUp();

function setUp() {
  const id = byId('enrol-id');
  const labels = byId('enrol-labels');
  const ttl = byId('enrol-ttl');
  const formErr = byId('enrol-form-error');
  const result = byId('enrol-result');
  const tokenEl = byId('enrol-token');
  const copyStatus = byId('enrol-copy-status');

  const set = (input, msg) => {
    byId(`${input.id}-error`).textContent = msg || '';
    input.setAttribute('aria-invalid', msg ? 'true' : 'false');
    return !msg;
  };
  const labelList = () => labels.value.split(/[,\s]+/).filter((l) => l !== '');
  const checkID = () => set(id, id.value === '' ? 'id is required'
    : (!agentIDRe.test(id.value) || id.value === '.' || id.value === '..') ? 'id must be 1-64 of A-Z a-z 0-9 . _ -' : '');
  const checkLabels = () => {
    const bad = labelList().find((l) => !labelGrantRe.test(l));
    return set(labels, bad === undefined ? '' : `label ${bad}: want key=value or key=*`);
  };
  const checkTTL = () => {
    let msg = durationError(ttl.value);
    if (!msg && parseGoDuration(ttl.value) <= 0) msg = 'ttl is required, e.g. "24h"';
    return set(ttl, msg);
  };
  id.addEventListener('change', checkID);
  labels.addEventListener('change', checkLabels);
  ttl.addEventListener('change', checkTTL);

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showMessage(formErr, '');
    const bad = [[checkID(), id], [checkLabels(), labels], [checkTTL(), ttl]].filter(([ok]) => !ok);
    if (bad.length) {
      bad[0][1].focus();
      return;
    }
    const submit = form.querySelector('button[type="submit"]');
    submit.disabled = true;
    try {
      const res = await api('/api/v1/agents/enrol', { method: 'POST', json: { id: id.value, labels: labelList(), ttl: ttl.value } });
      tokenEl.value = res.token;
      byId('enrol-result-id').textContent = res.agent;
      byId('enrol-subject').textContent = res.subject;
      for (const [elID, t] of [['enrol-expires', res.expires_at], ['enrol-refresh-until', res.refresh_until]]) {
        const el = byId(elID);
        el.dateTime = t;
        el.textContent = fmtTime(t);
      }
      copyStatus.textContent = '';
      result.hidden = false;
      tokenEl.focus();
      tokenEl.select();
    } catch (err) {
      showMessage(formErr, err, 'error');
    } finally {
      submit.disabled = false;
    }
  });

  byId('enrol-copy').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(tokenEl.value);
      copyStatus.textContent = 'Copied to the clipboard.';
    } catch {
      // No clipboard permission (e.g. plain http): leave it selected.
      tokenEl.focus();
      tokenEl.select();
      copyStatus.textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
    }
  });
}
