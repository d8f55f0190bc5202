// A matrix job's views on its job page (docs/jobs.md, "Tests: matrices,
// definitions, comparisons"): the matrix table of one metric (agents ×
// combinations with row and column totals, from the result matrix.json),
// the combinations with their phases, and the comparison with another job
// (GET /api/v1/compare): per cell the difference and the ratio.
//
// The job page calls renderMatrix with every job document it reads (the
// page polls while the job is active); the tables are read again only when
// the metric changes or the job has just finished.

import { api, byId, h, url, jobURL, emptyRow, showMessage, phaseBadge } from './util.js';

// metricKey writes a key as the summary CSV names it; metricLeaves joins
// the names of a path (docs/jobs.md): keys joined with ".", array
// positions as "[i]", and \ . [ ] ' in a key escaped with a backslash, so
// that names never collide.
export function metricKey(k) {
  return k.replace(/[\\.\[\]']/g, (c) => '\\' + c);
}

// metricLeaves lists a metrics object's leaves as [name, value], the value
// as reported (an empty array or object as the text "[]" or "{}").
export function metricLeaves(v, name = '', out = []) {
  if (Array.isArray(v)) {
    if (v.length === 0) out.push([name, '[]']);
    v.forEach((x, i) => metricLeaves(x, `${name}[${i}]`, out));
  } else if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v);
    if (keys.length === 0 && name !== '') out.push([name, '{}']);
    for (const k of keys) metricLeaves(v[k], name === '' ? metricKey(k) : `${name}.${metricKey(k)}`, out);
  } else {
    out.push([name, v]);
  }
  return out;
}

// numericMetrics are the names of the numeric metrics the runs report,
// sorted: the metrics a matrix can show.
function numericMetrics(runs) {
  const names = new Set();
  for (const r of runs) {
    if (!r.metrics || typeof r.metrics !== 'object') continue;
    for (const [name, value] of metricLeaves(r.metrics)) if (typeof value === 'number') names.add(name);
  }
  return [...names].sort();
}

// keyedMetrics are the names of the metrics the runs report keyed by
// something (e.g. bytes_served of {"bytes_served": {"c1": 5}}), sorted: the
// metrics a matrix can be checked against (docs/jobs.md, "Client and server
// disagreement").
function keyedMetrics(numericNames) {
  const names = new Set();
  for (const n of numericNames) {
    const m = /^((?:[^\\.\[]|\\.)+)[.\[]/.exec(n);
    if (m) names.add(m[1]);
  }
  return [...names].sort();
}

// matrixParameters are the names of the job's matrix parameters, in the
// order of its combinations.
function matrixParameters(info) {
  const names = new Set();
  for (const c of info.combinations || []) for (const k of Object.keys(c.parameters || {})) names.add(k);
  return [...names];
}

// The check a job is shown with first, when its runs report the metric.
const defaultAgainst = 'bytes_served';
const defaultBy = 'server';

// fillSelect sets a select's options to values (labels: label(value)),
// keeping its value when still offered, else choosing fallback.
function fillSelect(select, values, label, fallback) {
  const have = [...select.options].map((o) => o.value);
  if (values.join('\n') === have.join('\n')) return;
  const keep = select.value;
  select.replaceChildren(...values.map((v) => h('option', { value: v, text: label(v) })));
  select.value = values.includes(keep) && keep !== '' ? keep : fallback;
}

// cellText shows a number as sent, a missing cell as a dash.
function cellText(v) {
  return v === null || v === undefined ? '—' : String(v);
}

const els = {
  section: () => byId('job-matrix'),
  metric: () => byId('matrix-metric'),
  csv: () => byId('matrix-csv'),
  message: () => byId('matrix-message'),
  against: () => byId('matrix-against'),
  by: () => byId('matrix-by'),
  disagreements: () => byId('matrix-disagreements'),
};

let jobId = '';
let shownKey = ''; // "metric|phase|against|by" of the matrix shown
let checkChosen = false; // the user has chosen the check (or none)
let loading = null;
let definitionJobsRead = false;

function resultsPath(name) {
  return '/api/v1/jobs/' + encodeURIComponent(jobId) + '/results/' + name;
}

/**
 * Renders the matrix views of job document j (nothing for other jobs).
 * Returns the promise of the read of matrix.json when it starts one.
 */
export function renderMatrix(j) {
  const info = j.jobInfo || {};
  const combos = info.combinations || [];
  if (combos.length === 0) return undefined;
  jobId = j.jobId;
  els.section().hidden = false;
  byId('job-compare').hidden = false;
  renderCombinations(info, j.jobInfo.runs || []);
  const select = els.metric();
  const names = numericMetrics(info.runs || []);
  const have = [...select.options].map((o) => o.value);
  if (names.join('\n') !== have.join('\n')) {
    const keep = select.value;
    select.replaceChildren(...names.map((n) => h('option', { value: n, text: n })));
    if (names.includes(keep)) select.value = keep;
  }
  const keyed = keyedMetrics(names);
  const againstFallback = !checkChosen && keyed.includes(defaultAgainst) ? defaultAgainst : '';
  fillSelect(els.against(), ['', ...keyed], (v) => v || 'nothing', checkChosen ? els.against().value : againstFallback);
  const params = matrixParameters(info);
  fillSelect(els.by(), params, (v) => v, params.includes(defaultBy) ? defaultBy : (params[0] || ''));
  if (!definitionJobsRead && info.definition) {
    definitionJobsRead = true;
    readDefinitionJobs(info.definition.name);
  }
  const hasMatrix = (j.results || []).some((r) => r.id === 'matrix.json');
  if (!hasMatrix) {
    emptyRow(byId('matrix-rows'), 'The matrix appears when the job has finished.');
    els.csv().hidden = true;
    return undefined;
  }
  // The first read asks for the server's default metric (bytes_read when
  // reported); later ones for the metric chosen.
  if (loading !== null) return undefined;
  if (shownKey === '') return loadMatrix('', j.phase);
  if (select.value + '|' + j.phase + '|' + checkQuery().join('|') !== shownKey) return loadMatrix(select.value, j.phase);
  return undefined;
}

// renderCombinations lists each combination: its child job, its values, its
// phase and how its runs stand.
function renderCombinations(info, runs) {
  const byJob = new Map();
  for (const r of runs) {
    const c = byJob.get(r.job) || new Map();
    c.set(r.state, (c.get(r.state) || 0) + 1);
    byJob.set(r.job, c);
  }
  const body = byId('matrix-combinations-rows');
  body.replaceChildren(...(info.combinations || []).map((c) => {
    const states = [...(byJob.get(c.job) || new Map())].map(([s, n]) => `${n} ${s.replaceAll('_', ' ')}`).join(', ');
    return h('tr', { 'data-testid': 'combination-row', dataset: { job: c.job, phase: c.phase } },
      h('td', {}, h('a', { href: jobURL(c.job), text: c.job })),
      h('td', { class: 'wrap', text: c.label }),
      h('td', {}, phaseBadge(c.phase)),
      h('td', { text: states || '—' }));
  }));
}

// checkQuery is the chosen check as [against, by], or [] for none.
function checkQuery() {
  const against = els.against().value;
  const by = els.by().value;
  return against && by ? [against, by] : [];
}

// loadMatrix reads matrix.json for metric ("" for the server's default),
// checked against the serving side when a check is chosen, and shows it.
async function loadMatrix(metric, phase) {
  loading = metric;
  try {
    const check = checkQuery();
    const query = metric ? { metric } : {};
    if (check.length) [query.against, query.by] = check;
    const m = await api(resultsPath('matrix.json'), { query });
    shownKey = m.metric + '|' + phase + '|' + check.join('|');
    const select = els.metric();
    if (m.metric && ![...select.options].some((o) => o.value === m.metric)) select.append(h('option', { value: m.metric, text: m.metric }));
    if (m.metric) select.value = m.metric;
    showMatrix(m);
    showMessage(els.message(), '');
  } catch (err) {
    showMessage(els.message(), err, 'error');
  } finally {
    loading = null;
  }
}

// columnLabel is a column's heading: the value of the one matrix
// parameter, or the combination's label when there are several.
function columnLabel(m, c) {
  const ps = m.parameters || [];
  if (ps.length === 1 && c.parameters && c.parameters[ps[0]] !== undefined) return c.parameters[ps[0]];
  return c.label;
}

// matrixCell is row r's cell i: with a check, a cell that disagrees with
// the serving side has the class "disagree", a marker "≠" and a title with
// both figures.
function matrixCell(m, r, i, label) {
  const v = r.cells[i];
  const cls = v === null ? 'num missing' : 'num';
  if (!m.against || !r.disagree || !r.disagree[i]) return h('td', { class: cls, dataset: { column: label }, text: cellText(v) });
  const served = r.against ? r.against[i] : null;
  return h('td', {
    class: cls + ' disagree',
    'data-testid': 'matrix-disagree',
    title: `${r.agent} reported ${m.metric} ${cellText(v)}; the serving side (${m.against.metric} by ${m.against.by}) ${cellText(served)}`,
    dataset: { column: label, against: cellText(served) },
  }, cellText(v), ' ', h('span', { class: 'disagree-mark', text: '≠ ' + cellText(served) }));
}

/** Shows a matrix.json answer in the matrix table. */
export function showMatrix(m) {
  const t0 = performance.now();
  const cols = m.columns || [];
  const labels = cols.map((c) => columnLabel(m, c));
  byId('matrix-head').replaceChildren(h('tr', {},
    h('th', { scope: 'col', text: 'Agent' }),
    ...labels.map((l) => h('th', { scope: 'col', class: 'num wrap', text: l })),
    h('th', { scope: 'col', class: 'num', text: 'Total' })));
  const rows = m.rows || [];
  const body = byId('matrix-rows');
  if (rows.length === 0) emptyRow(body, `No run reported ${m.metric || 'a numeric metric'}.`);
  else {
    body.replaceChildren(...rows.map((r) => h('tr', { 'data-testid': 'matrix-row', dataset: { agent: r.agent } },
      h('th', { scope: 'row', class: 'topic', text: r.agent }),
      ...(r.cells || []).map((v, i) => matrixCell(m, r, i, labels[i])),
      h('td', { class: 'num total', dataset: { column: 'total' }, text: cellText(r.total) }))));
  }
  byId('matrix-foot').replaceChildren(h('tr', { 'data-testid': 'matrix-totals' },
    h('th', { scope: 'row', text: 'Total' }),
    ...cols.map((c, i) => h('td', { class: 'num total', dataset: { column: labels[i] }, text: cellText(c.total) })),
    h('td', { class: 'num total', dataset: { column: 'total' }, text: cellText(m.total) })));
  const disagreements = els.disagreements();
  disagreements.hidden = !m.against;
  disagreements.textContent = m.against
    ? `${m.against.disagreements} ${m.against.disagreements === 1 ? 'cell disagrees' : 'cells disagree'} with ${m.against.metric} by ${m.against.by}`
    : '';
  disagreements.dataset.count = m.against ? String(m.against.disagreements) : '';
  const csv = els.csv();
  const check = m.against ? `&against=${encodeURIComponent(m.against.metric)}&by=${encodeURIComponent(m.against.by)}` : '';
  csv.href = url('/ui/api' + resultsPath('matrix.csv') + '?metric=' + encodeURIComponent(m.metric || '') + check);
  csv.download = `${jobId}-${m.metric || 'matrix'}.csv`;
  csv.hidden = false;
  const section = els.section();
  section.dataset.metric = m.metric || '';
  section.dataset.renderMs = String(Math.round(performance.now() - t0));
  section.dataset.builtAt = String(Math.round(performance.now())); // since navigation
}

// readDefinitionJobs offers the other jobs of the job's definition to
// compare with.
async function readDefinitionJobs(name) {
  const select = byId('compare-other');
  try {
    const l = await api('/api/v1/definitions/' + encodeURIComponent(name) + '/jobs');
    const others = (l.jobs || []).filter((x) => x.jobId !== jobId).reverse(); // newest first
    select.replaceChildren(h('option', { value: '', text: others.length ? 'Choose a job…' : 'No other job of this definition' }),
      ...others.map((x) => h('option', { value: x.jobId, text: `${x.jobId}${x.runId ? ' (' + x.runId + ')' : ''} ${x.phase || ''}`.trim() })));
  } catch (err) {
    select.replaceChildren(h('option', { value: '', text: 'The definition\'s jobs could not be read' }));
    showMessage(byId('compare-message'), err, 'error');
  }
}

// fmtRatio shows a ratio as "× 1.25", a missing one as a dash.
function fmtRatio(r) {
  return r === null || r === undefined ? '—' : '× ' + r;
}

// fmtDifference shows a difference with its sign.
function fmtDifference(d) {
  if (d === null || d === undefined) return '—';
  return d > 0 ? '+' + d : String(d);
}

/** Shows a compare answer: a table of agents × columns (totals last). */
export function showComparison(c) {
  const t0 = performance.now();
  const cells = new Map();
  for (const x of c.cells || []) cells.set(x.agent + '\u0000' + x.column, x);
  const columns = [...(c.columns || []), 'total'];
  const agents = [...(c.agents || []), 'total'];
  const cell = (agent, column) => {
    const x = cells.get(agent + '\u0000' + column);
    if (!x) return h('td', { class: 'num missing', text: '—' });
    const sign = x.difference > 0 ? 'up' : x.difference < 0 ? 'down' : 'same';
    return h('td', {
      class: `num compare-cell ${x.difference === null ? 'missing' : sign}${agent === 'total' || column === 'total' ? ' total' : ''}`,
      'data-testid': 'compare-cell',
      title: `${cellText(x.base)} → ${cellText(x.other)}`,
      dataset: { agent, column, difference: cellText(x.difference), ratio: cellText(x.ratio) },
    }, h('span', { class: 'difference', text: fmtDifference(x.difference) }), ' ', h('span', { class: 'ratio', text: fmtRatio(x.ratio) }));
  };
  byId('compare-head').replaceChildren(h('tr', {}, h('th', { scope: 'col', text: 'Agent' }),
    ...columns.map((col) => h('th', { scope: 'col', class: 'num wrap', text: col === 'total' ? 'Total' : col }))));
  byId('compare-rows').replaceChildren(...agents.map((a) => h('tr', { 'data-testid': 'compare-row', dataset: { agent: a } },
    h('th', { scope: 'row', class: 'topic', text: a === 'total' ? 'Total' : a }),
    ...columns.map((col) => cell(a, col)))));
  const caption = byId('compare-caption');
  caption.textContent = `${c.metric}: ${c.other} compared with ${c.base} (this job); each cell: other − this, and other ÷ this.`;
  const section = byId('job-compare');
  section.dataset.other = c.other;
  section.dataset.renderMs = String(Math.round(performance.now() - t0));
  byId('compare-table-wrap').hidden = false;
}

async function compare(ev) {
  ev.preventDefault();
  const message = byId('compare-message');
  const other = byId('compare-id').value.trim() || byId('compare-other').value;
  if (!other) {
    showMessage(message, 'Choose a job of this definition or enter a job id.', 'error');
    return;
  }
  showMessage(message, '');
  try {
    const metric = els.metric().value;
    const query = { base: jobId, other };
    if (metric) query.metric = metric;
    showComparison(await api('/api/v1/compare', { query }));
  } catch (err) {
    showMessage(message, err, 'error');
  }
}

els.metric().addEventListener('change', () => {
  const phase = byId('job-phase').textContent;
  loadMatrix(els.metric().value, phase);
  const wrap = byId('compare-table-wrap');
  if (!wrap.hidden) byId('compare-form').requestSubmit();
});
for (const el of [els.against(), els.by()]) {
  el.addEventListener('change', () => {
    checkChosen = true;
    loadMatrix(els.metric().value, byId('job-phase').textContent);
  });
}
byId('compare-form').addEventListener('submit', compare);
