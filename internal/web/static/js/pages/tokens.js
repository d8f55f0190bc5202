// Tokens (operators): mint a relay token for a topic, booking, scopes and
// lifetime through POST /api/v1/tokens, then show it once with a copy
// button. The mint is audited under the user's name by the API.

import { api, byId, showMessage, fmtTime } from '../util.js';
import { topicPatternError, durationError, parseGoDuration, maxRevocationValueLen } from '../checks.js';
import { byteLength } from '../params.js';

const form = byId('token-form');
const topic = byId('token-topic');
const prefix = byId('token-prefix');
const booking = byId('token-booking');
const sub = byId('token-sub');
const ttl = byId('token-ttl');
const read = byId('token-scope-read');
const write = byId('token-scope-write');
const scopesErr = byId('token-scopes-error');
const formErr = byId('token-form-error');
const result = byId('token-result');
const valueEl = byId('token-value');
const copyBtn = byId('token-copy');
const copyStatus = byId('token-copy-status');

function set(input, msg) {
  byId(`${input.id}-error`).textContent = msg || '';
  input.setAttribute('aria-invalid', msg ? 'true' : 'false');
  return !msg;
}

function scopes() {
  return [read, write].filter((b) => b.checked).map((b) => b.value);
}

function checkTopic() {
  const t = topic.value;
  if (t === '') return set(topic, scopes().length ? 'topic is required for read and write' : '');
  return set(topic, topicPatternError(t));
}

function checkScopes() {
  const ok = scopes().length > 0;
  scopesErr.textContent = ok ? '' : 'scopes is required';
  return ok;
}

function checkOptional(input, name) {
  return set(input, byteLength(input.value) > maxRevocationValueLen ? `${name} too long` : '');
}

function checkTTL() {
  let msg = durationError(ttl.value);
  if (!msg && parseGoDuration(ttl.value) <= 0) msg = 'ttl is required, e.g. "1h" or 3600';
  return set(ttl, msg);
}

topic.addEventListener('change', checkTopic);
booking.addEventListener('change', () => checkOptional(booking, 'booking_id'));
sub.addEventListener('change', () => checkOptional(sub, 'sub'));
ttl.addEventListener('change', checkTTL);
for (const b of [read, write]) b.addEventListener('change', checkScopes);

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showMessage(formErr, '');
  const bad = [];
  if (!checkScopes()) bad.push(read);
  if (!checkTopic()) bad.push(topic);
  if (!checkOptional(booking, 'booking_id')) bad.push(booking);
  if (!checkOptional(sub, 'sub')) bad.push(sub);
  if (!checkTTL()) bad.push(ttl);
  if (bad.length) {
    bad[0].focus();
    return;
  }
  const body = { topic: topic.value, prefix: prefix.value, scopes: scopes(), ttl: ttl.value };
  if (booking.value) body.booking_id = booking.value;
  if (sub.value) body.sub = sub.value;
  const submit = form.querySelector('button[type="submit"]');
  submit.disabled = true;
  try {
    const res = await api('/api/v1/tokens', { method: 'POST', json: body });
    valueEl.value = res.token;
    const exp = byId('token-expires');
    exp.dateTime = res.expires_at;
    exp.textContent = fmtTime(res.expires_at);
    copyStatus.textContent = '';
    result.hidden = false;
    valueEl.focus();
    valueEl.select();
  } catch (err) {
    showMessage(formErr, err, 'error');
  } finally {
    submit.disabled = false;
  }
});

copyBtn.addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(valueEl.value);
    copyStatus.textContent = 'Copied to the clipboard.';
  } catch {
    // No clipboard permission (e.g. plain http): leave it selected.
    valueEl.focus();
    valueEl.select();
    copyStatus.textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
  }
});
