// Jobs: the job list with phase filters, and (operators) the form that
// creates a job. The form is generated from the actions the connected
// agents declare: one input per parameter, checked as the user types with
// the hub's own rules and messages (params.js), targets by agent id or
// label selector, then POST /ui/api/api/v1/jobs as JSON with phase RUN.
// The server checks everything again; its error is shown verbatim.

import { api, byId, h, fmtCount, timeEl, emptyRow, showMessage, jobURL, phaseBadge, networkMessage, snapshotBar, fmtDuration, elapsed } from '../util.js';
import { checkParam, requiredMessage, formatG, byteLength } from '../params.js';
import { targetsError } from '../checks.js';

// --- the list ---

const query = new URLSearchParams(location.search);
const phases = query.getAll('phase').map((p) => p.toUpperCase());
for (const box of document.querySelectorAll('#jobs-filter input[name="phase"]')) box.checked = phases.includes(box.value);
// The text filters (exact matches, done by the server), kept in the URL
// like the phases: ?owner=…&action=…&runid=….
const textFilters = { owner: 'OWNER', action: 'ACTION', runid: 'RUNID' };
const filterValues = {};
for (const name of Object.keys(textFilters)) {
  filterValues[name] = (query.get(name) || '').trim();
  byId('jobs-' + name).value = filterValues[name];
}

const maxListed = 1000;

async function loadJobs() {
  const tbody = byId('jobs-rows');
  const countEl = byId('jobs-count');
  const q = new URLSearchParams();
  for (const p of phases) q.append('PHASE', p);
  for (const [name, param] of Object.entries(textFilters)) if (filterValues[name]) q.set(param, filterValues[name]);
  q.set('LAST', String(maxListed));
  try {
    const res = await api('/api/v1/jobs', { query: q });
    const jobs = (res.jobs || []).slice().sort((a, b) => (b.creationTime || '').localeCompare(a.creationTime || ''));
    stampJobs();
    showMessage(byId('jobs-message'), '');
    const filters = Object.keys(textFilters).filter((n) => filterValues[n]).map((n) => `${n} ${filterValues[n]}`);
    countEl.textContent = `${fmtCount(jobs.length)} jobs${jobs.length >= maxListed ? ` (the ${fmtCount(maxListed)} newest)` : ''}` +
      (phases.length ? ` in ${phases.join(', ')}` : '') + (filters.length ? `, ${filters.join(', ')}` : '');
    if (jobs.length === 0) {
      emptyRow(tbody, 'No jobs.');
      return;
    }
    tbody.replaceChildren(...jobs.map((j) => {
      const took = elapsed(j.startTime, j.endTime);
      return h('tr', { 'data-testid': 'job-row', dataset: { jobId: j.jobId, phase: j.phase } },
        h('td', { class: 'topic', 'data-label': 'Job' }, h('a', { href: jobURL(j.jobId), text: j.jobId })),
        h('td', { 'data-testid': 'job-row-outcome', 'data-label': 'Outcome' }, phaseBadge(j.phase),
          j.errorSummary ? h('span', { class: 'row-error', text: ' ' + j.errorSummary }) : ''),
        h('td', { class: 'nowrap', 'data-testid': 'job-row-action', 'data-label': 'Action', text: j.action || '—' }),
        h('td', { class: 'wrap', 'data-testid': 'job-row-targets', 'data-label': 'Targets', text: j.targets || '—' }),
        h('td', { class: 'wrap', 'data-testid': 'job-row-owner', 'data-label': 'Owner', text: j.ownerId || '—' }),
        h('td', { class: 'num', 'data-testid': 'job-row-duration', 'data-label': 'Duration',
          text: took === null ? '—' : fmtDuration(took) + (j.endTime ? '' : ' so far') }),
        h('td', { class: 'wrap', 'data-label': 'Run id', text: j.runId || '—' }),
        h('td', { 'data-label': 'Created' }, timeEl(j.creationTime)));
    }));
  } catch (err) {
    countEl.textContent = '';
    emptyRow(tbody, 'The jobs could not be listed.');
    showMessage(byId('jobs-message'), err, 'error');
  }
}

// No topic carries the job list: it is a snapshot, read again on Refresh.
const stampJobs = snapshotBar(document.querySelector('[data-snapshot="jobs"]'), loadJobs);
loadJobs();

// --- the create form (operators) ---

const form = document.getElementById('job-form');
if (form) setUpForm(form);

function setUpForm(form) {
  const actionSel = byId('job-action');
  const actionDesc = byId('job-action-desc');
  const actionErr = byId('job-action-error');
  const statusEl = byId('job-form-status');
  const idsBox = byId('target-ids');
  const labelsBox = byId('target-labels');
  const selector = byId('target-selector');
  const targetsErr = byId('targets-error');
  const paramsBox = byId('job-params');
  const runID = byId('job-runid');
  const runIDErr = byId('job-runid-error');
  const formErr = byId('job-form-error');
  const submit = form.querySelector('button[type="submit"]');

  let groups = []; // [{key, name, action, agents: [agent…]}]
  let fields = []; // [{param, input, err}]

  function setError(input, errEl, msg) {
    errEl.textContent = msg || '';
    if (input) input.setAttribute('aria-invalid', msg ? 'true' : 'false');
    return !msg;
  }

  function groupOf(key) {
    return groups.find((g) => g.key === key) || null;
  }

  // An action's interface, as jobproto.Action.Equal compares them.
  function signature(a) {
    return JSON.stringify([a.name, a.timeout, (a.params || []).map((p) => ({ ...p, description: undefined }))]);
  }

  async function loadActions() {
    let res;
    try {
      res = await api('/api/v1/agents');
    } catch (err) {
      statusEl.textContent = `The agents could not be listed: ${networkMessage(err)}`;
      return;
    }
    const bySig = new Map();
    for (const agent of res.agents || []) {
      if (!agent.connected) continue;
      for (const a of agent.actions || []) {
        const sig = signature(a);
        let g = bySig.get(sig);
        if (!g) bySig.set(sig, (g = { key: sig, name: a.name, action: a, agents: [] }));
        g.agents.push(agent);
      }
    }
    groups = [...bySig.values()].sort((a, b) => a.name.localeCompare(b.name) || b.agents.length - a.agents.length);
    const names = new Map();
    for (const g of groups) names.set(g.name, (names.get(g.name) || 0) + 1);
    actionSel.replaceChildren(h('option', { value: '', text: groups.length ? 'Choose an action…' : 'No connected agent declares an action' }),
      ...groups.map((g) => h('option', {
        value: g.key,
        text: names.get(g.name) > 1 ? `${g.name} (as declared by ${g.agents.map((a) => a.id).slice(0, 3).join(', ')}${g.agents.length > 3 ? '…' : ''})` : g.name,
      })));
    statusEl.textContent = groups.length
      ? `${fmtCount(groups.length)} actions offered by the connected agents.`
      : 'No connected agent declares an action: start a host agent with actions (docs/jobs.md).';
    renderAction();
  }

  function typeText(p) {
    switch (p.type) {
      case 'int':
      case 'number': {
        const lo = p.min !== undefined && p.min !== null ? formatG(p.min) : null;
        const hi = p.max !== undefined && p.max !== null ? formatG(p.max) : null;
        const range = lo !== null && hi !== null ? `, ${lo} to ${hi}` : lo !== null ? `, at least ${lo}` : hi !== null ? `, at most ${hi}` : '';
        return `${p.type === 'int' ? 'integer' : 'number'}${range}`;
      }
      case 'string':
        return `text${p.max_length ? `, at most ${p.max_length} bytes` : ''}${p.pattern ? `, matching ${p.pattern}` : ''}`;
      case 'bool':
        return 'true or false';
      case 'enum':
        return `one of ${(p.values || []).join(', ')}`;
      default:
        return p.type;
    }
  }

  function renderAction() {
    const g = groupOf(actionSel.value);
    setError(actionSel, actionErr, '');
    actionDesc.textContent = g ? [g.action.description, `Timeout ${g.action.timeout}.`].filter(Boolean).join(' ') : '';
    // Targets: the agents declaring this action.
    idsBox.replaceChildren(...(g ? g.agents : []).map((a) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', name: 'target', value: a.id, 'data-testid': `target-${a.id}` }),
      ` ${a.id}`, a.labels && a.labels.length ? h('span', { class: 'muted', text: ` (${a.labels.join(', ')})` }) : null)));
    if (!g) idsBox.append(h('p', { class: 'muted', text: 'Choose an action to see the agents that offer it.' }));
    // Parameters.
    const legend = paramsBox.querySelector('legend');
    fields = [];
    const params = g ? g.action.params || [] : [];
    const nodes = params.map((p) => {
      const id = `param-${p.name}`;
      const errId = `${id}-error`;
      const hintId = `${id}-hint`;
      let input;
      const common = { id, name: p.name, 'data-testid': id, 'aria-describedby': `${hintId} ${errId}` };
      if (p.type === 'enum' || p.type === 'bool') {
        const values = p.type === 'bool' ? ['true', 'false'] : p.values || [];
        const first = p.required ? 'Choose…' : p.default ? `(default: ${p.default})` : '(not set)';
        input = h('select', common, h('option', { value: '', text: first }), values.map((v) => h('option', { value: v, text: v })));
      } else {
        input = h('input', {
          ...common, type: 'text', autocomplete: 'off', spellcheck: 'false',
          inputmode: p.type === 'int' ? 'numeric' : p.type === 'number' ? 'decimal' : undefined,
          placeholder: p.default ? `default: ${p.default}` : undefined,
        });
      }
      const err = h('p', { id: errId, class: 'field-error', 'data-testid': `param-error-${p.name}` });
      const f = { param: p, input, err };
      fields.push(f);
      input.addEventListener('change', () => checkField(f));
      input.addEventListener('blur', () => checkField(f));
      input.addEventListener('input', () => {
        if (input.getAttribute('aria-invalid') === 'true') checkField(f);
      });
      return h('div', { class: 'field' },
        h('label', { for: id }, p.name, ' ', h('span', { class: 'param-type', text: `(${typeText(p)}${p.required ? ', required' : ''})` })),
        input,
        h('p', { id: hintId, class: 'hint', text: p.description || '' }),
        err);
    });
    paramsBox.replaceChildren(legend, ...(nodes.length ? nodes : [h('p', { class: 'muted', text: g ? 'This action has no parameters.' : 'Choose an action.' })]));
  }

  function checkField(f) {
    const v = f.input.value;
    const msg = v === '' ? (f.param.required ? requiredMessage(f.param) : null) : checkParam(f.param, v);
    return setError(f.input, f.err, msg);
  }

  function targetMode() {
    return form.querySelector('input[name="target-mode"]:checked').value;
  }

  function targets() {
    if (targetMode() === 'labels') return selector.value.trim();
    return [...idsBox.querySelectorAll('input[name="target"]:checked')].map((b) => b.value).join(',');
  }

  function checkTargets() {
    const input = targetMode() === 'labels' ? selector : null;
    return setError(input, targetsErr, targetsError(targets()));
  }

  for (const radio of form.querySelectorAll('input[name="target-mode"]')) {
    radio.addEventListener('change', () => {
      const labels = targetMode() === 'labels';
      labelsBox.hidden = !labels;
      idsBox.hidden = labels;
      setError(selector, targetsErr, '');
    });
  }
  idsBox.addEventListener('change', () => {
    if (targetsErr.textContent) checkTargets();
  });
  selector.addEventListener('change', checkTargets);
  actionSel.addEventListener('change', renderAction);
  runID.addEventListener('change', () => checkRunID());

  function checkRunID() {
    return setError(runID, runIDErr, byteLength(runID.value) > 256 ? 'RUNID is longer than 256 bytes' : '');
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showMessage(formErr, '');
    const g = groupOf(actionSel.value);
    const bad = [];
    if (!setError(actionSel, actionErr, g ? '' : 'action is required')) bad.push(actionSel);
    if (!checkTargets()) bad.push(targetMode() === 'labels' ? selector : idsBox.querySelector('input') || actionSel);
    for (const f of fields) if (!checkField(f)) bad.push(f.input);
    if (!checkRunID()) bad.push(runID);
    if (bad.length > 0) {
      showMessage(formErr, `Correct the ${bad.length === 1 ? 'field' : `${bad.length} fields`} marked above.`, 'error');
      bad[0].focus();
      return;
    }
    const parameters = {};
    for (const f of fields) if (f.input.value !== '') parameters[f.param.name] = f.input.value;
    const body = { action: g.name, targets: targets(), parameters, phase: 'RUN' };
    if (runID.value) body.runId = runID.value;
    submit.disabled = true;
    try {
      const job = await api('/api/v1/jobs', { method: 'POST', json: body });
      location.assign(jobURL(job.jobId));
    } catch (err) {
      showMessage(formErr, err, 'error');
      // The hub names a failing parameter: show its message by the field too.
      const m = /^parameter ([A-Za-z][A-Za-z0-9_-]*): /.exec(err.message || '');
      const f = m && fields.find((x) => x.param.name.toLowerCase() === m[1].toLowerCase());
      if (f) setError(f.input, f.err, err.message);
    } finally {
      submit.disabled = false;
    }
  });

  loadActions();
}
