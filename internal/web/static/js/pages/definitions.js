// Test definitions: each definition (the newest version of each the user
// may read) with its test, its versions and the jobs started from it, and
// (operators) a Run button that starts a job from a chosen version, with
// parameters optionally overridden. Everything goes through the server's
// own API via /ui/api/ (docs/jobs.md, "Saved test definitions").

import { api, atLeast, byId, h, jobURL, timeEl, emptyRow, showMessage, snapshotBar, phaseBadge } from '../util.js';

const tbody = byId('def-rows');
const messageEl = byId('def-message');
const canRun = atLeast('operator');
// jobsShown is how many of a definition's jobs a row lists (newest first).
const jobsShown = 10;

const stamp = snapshotBar(document.querySelector('[data-snapshot="def"]'), () => load());

function defPath(name) {
  return '/api/v1/definitions/' + encodeURIComponent(name);
}

// specText sums a definition's test up: action, targets and parameters
// (a matrix parameter's values joined with " | ").
function specText(spec) {
  if (!spec) return '—';
  const params = Object.entries(spec.parameters || {})
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(' | ') : v}`);
  return [`${spec.action || '?'} on ${spec.targets || '?'}`, ...params].join('; ');
}

// parseOverrides reads "name=value" lines (a name on several lines: a
// matrix parameter) into form pairs; throws on a line without "=".
export function parseOverrides(text) {
  const pairs = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`"${line}" is not name=value`);
    pairs.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()]);
  }
  return pairs;
}

function jobsList(jobs) {
  if (jobs.length === 0) return h('span', { class: 'muted', text: 'No job yet.' });
  const newest = jobs.slice().reverse().slice(0, jobsShown);
  return h('ul', { class: 'plain-list' }, ...newest.map((j) => h('li', { 'data-testid': 'def-job', dataset: { job: j.jobId } },
    h('a', { href: jobURL(j.jobId), text: j.jobId }), ' ', phaseBadge(j.phase), j.runId ? ` ${j.runId}` : '')),
    jobs.length > jobsShown ? h('li', { class: 'muted', text: `and ${jobs.length - jobsShown} older` }) : null);
}

function runForm(d) {
  const idBase = 'def-run-' + d.name.replace(/[^A-Za-z0-9_-]/g, '_');
  const version = h('select', { id: idBase + '-version', 'data-testid': 'def-run-version' },
    ...d.versions.slice().reverse().map((v) => h('option', { value: String(v.version), text: `version ${v.version}` })));
  const overrides = h('textarea', { id: idBase + '-params', rows: 2, spellcheck: 'false', 'data-testid': 'def-run-params', placeholder: 'name=value, one a line' });
  const start = h('input', { type: 'checkbox', id: idBase + '-start', checked: true, 'data-testid': 'def-run-start' });
  const status = h('p', { class: 'message', role: 'status', 'data-testid': 'def-run-message' });
  const form = h('form', { class: 'def-run', 'data-testid': 'def-run-form' },
    h('label', { for: version.id, text: 'Version' }), version,
    h('label', { for: overrides.id, text: 'Parameters (optional)' }), overrides,
    h('label', { class: 'check' }, start, ' Start at once'),
    h('button', { type: 'submit', class: 'primary', 'data-testid': 'def-run', 'aria-label': `Run ${d.name}`, text: 'Run' }),
    status);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showMessage(status, '');
    let pairs;
    try {
      pairs = parseOverrides(overrides.value);
    } catch (err) {
      showMessage(status, err.message, 'error');
      return;
    }
    if (start.checked) pairs.push(['PHASE', 'RUN']);
    const newest = d.versions.length ? d.versions[d.versions.length - 1].version : d.version;
    const path = String(newest) === version.value ? defPath(d.name) + '/jobs' : defPath(d.name) + '/versions/' + encodeURIComponent(version.value) + '/jobs';
    const btn = form.querySelector('button');
    btn.disabled = true;
    try {
      const j = await api(path, { method: 'POST', form: pairs });
      status.replaceChildren('Started ', h('a', { href: jobURL(j.jobId), 'data-testid': 'def-run-job', text: j.jobId }), '.');
      await loadRow(d.name);
    } catch (err) {
      showMessage(status, err, 'error');
    } finally {
      btn.disabled = false;
    }
  });
  return form;
}

// loadRow reads one definition (its versions) and its jobs into its row.
async function loadRow(name) {
  const row = tbody.querySelector(`tr[data-name="${CSS.escape(name)}"]`);
  if (!row) return;
  const [d, l] = await Promise.all([api(defPath(name)), api(defPath(name) + '/jobs')]);
  d.versions = d.versions || [];
  const cells = [
    h('td', { class: 'topic' }, h('strong', { text: d.name }), h('div', { class: 'muted', text: `by ${d.owner}` })),
    h('td', { class: 'wrap', 'data-testid': 'def-spec', text: specText(d.spec) }),
    h('td', { 'data-testid': 'def-versions' }, h('ul', { class: 'plain-list' },
      ...d.versions.slice().reverse().map((v) => h('li', { 'data-testid': 'def-version', dataset: { version: String(v.version) } },
        `version ${v.version} `, timeEl(v.createdAt))))),
    h('td', { 'data-testid': 'def-jobs' }, jobsList(l.jobs || [])),
  ];
  if (canRun) cells.push(h('td', {}, runForm(d)));
  row.replaceChildren(...cells);
  row.dataset.loaded = 'true';
}

async function load() {
  try {
    const res = await api('/api/v1/definitions');
    const defs = (res.definitions || []).slice().sort((a, b) => a.name.localeCompare(b.name));
    stamp();
    if (defs.length === 0) {
      emptyRow(tbody, 'No definitions: store one with PUT /api/v1/definitions/{name}.');
      return;
    }
    tbody.replaceChildren(...defs.map((d) => h('tr', { 'data-testid': 'def-row', dataset: { name: d.name } },
      h('td', { class: 'topic', text: d.name }), h('td', { colspan: canRun ? 4 : 3, class: 'muted', text: 'Loading…' }))));
    await Promise.all(defs.map((d) => loadRow(d.name)));
    showMessage(messageEl, '');
  } catch (err) {
    showMessage(messageEl, err, 'error');
  }
}

load();
