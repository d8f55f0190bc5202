// A job: phase, progress by agent (with each run's output tails),
// parameters, results with downloads, the log, and (operators) Abort.
//
// The log: each run's log as the hub kept it (GET …/runs/{agent}/log: so
// far while the run goes on, stored once it ended), then, while the job is
// active, the lines that come live from the relay (topic jobs/{id}/log).
// The live messages number each run's lines (seq) as that log does, so a
// late viewer shows the log and then only the live lines past it: nothing
// is missed, nothing shown twice. The logs are read once the live topic is
// open (and again after a reconnect), live lines arriving meanwhile wait.
// The topic's last message, {"event":"end"}, says the job ended. No topic carries the job's own changes, so while it is active
// the page asks the jobs API with UWS's blocking WAIT: the server answers
// as soon as the phase changes (or after 25 s); the runs are also read
// again shortly after log output arrives.

import { api, byId, h, url, fmtBytes, timeEl, emptyRow, showMessage, stateBadge, debounce, fmtDuration, elapsed } from '../util.js';
import { subscribe } from '../live.js';
import { confirmAction } from '../dialog.js';
import { metricLeaves, renderMatrix } from '../matrix.js';

const id = byId('job').dataset.jobId;
const jobPath = '/api/v1/jobs/' + encodeURIComponent(id);
const activePhases = new Set(['PENDING', 'QUEUED', 'EXECUTING', 'HELD', 'SUSPENDED']);
const maxLogLines = 5000;
const waitSeconds = 25;
const logReaders = 3; // run logs read at once

const messageEl = byId('job-message');
const abortBtn = document.getElementById('job-abort');
const runBtn = document.getElementById('job-run');
const followBox = byId('job-log-follow');
const actionMsg = byId('job-action-message');
const logBox = document.querySelector('[data-testid="job-log"]');
const logList = byId('log-lines');

let job = null;
let logSub = null;
let waiting = false;
let settleTries = 0;

function text(elId, value) {
  const el = byId(elId);
  if (el.textContent !== value) el.textContent = value;
}

function setTime(elId, value) {
  byId(elId).replaceChildren(timeEl(value));
}

function resultHref(rid) {
  return url('/ui/api' + jobPath + '/results/' + rid.split('/').map(encodeURIComponent).join('/'));
}

function render(j) {
  job = j;
  const phaseEl = byId('job-phase');
  phaseEl.textContent = j.phase;
  phaseEl.dataset.phase = j.phase;
  const params = j.parameters || {};
  text('job-action', params.action || '—');
  text('job-targets', params.targets || '—');
  text('job-owner', j.ownerId || '—');
  text('job-runid', j.runId || '—');
  setTime('job-created', j.creationTime);
  setTime('job-started', j.startTime);
  setTime('job-ended', j.endTime);
  const took = elapsed(j.startTime, j.endTime);
  text('job-duration', took === null ? '—' : fmtDuration(took) + (j.endTime && !j.endTime.startsWith('0001') ? '' : ' so far'));
  const summary = byId('job-error-summary');
  if (j.errorSummary && j.errorSummary.message) {
    summary.textContent = `Error (${j.errorSummary.type}): ${j.errorSummary.message}`;
    summary.hidden = false;
  } else summary.hidden = true;
  if (abortBtn) abortBtn.hidden = !activePhases.has(j.phase);
  if (runBtn) runBtn.hidden = j.phase !== 'PENDING';

  const runs = (j.jobInfo && j.jobInfo.runs) || [];
  text('job-outcome', outcomeText(j.phase, runs));
  renderDiagnosis(j, runs);
  // A matrix job's matrix comes first: while its matrix.json is read, the
  // (hundreds of) runs' tables wait, then show the job as it is by then.
  const matrixRead = renderMatrix(j);
  if (matrixRead) matrixRead.finally(() => renderRunTables(job));
  else renderRunTables(j);

  const pbody = byId('job-params-rows');
  const entries = Object.entries(params).filter(([k]) => k !== 'action' && k !== 'targets');
  if (entries.length === 0) emptyRow(pbody, 'No parameters.');
  else pbody.replaceChildren(...entries.map(([k, v]) => h('tr', { 'data-testid': 'param-row', dataset: { param: k } }, h('td', { class: 'topic', text: k }), paramValue(v))));

  const results = j.results || [];
  const rbody = byId('job-results-rows');
  if (results.length === 0) emptyRow(rbody, activePhases.has(j.phase) ? 'No results yet: they appear as agents finish.' : 'No results.');
  else {
    rbody.replaceChildren(...results.map((r) => {
      const name = r.id === 'summary' ? 'summary (CSV, one row per agent and metric)' : r.id;
      const file = r.id === 'summary' ? `${id}-summary.csv` : r.id.split('/').pop();
      return h('tr', { 'data-testid': 'result-row', dataset: { result: r.id } },
        h('td', { class: 'wrap', text: name }),
        h('td', { text: r.mimeType || '' }),
        h('td', { class: 'num', text: r.size === null || r.size === undefined ? '—' : fmtBytes(r.size) }),
        h('td', {}, h('a', { href: resultHref(r.id), download: file, 'data-testid': 'result-download', 'aria-label': `Download ${r.id}`, text: 'Download' })));
    }));
  }

  if (activePhases.has(j.phase)) {
    startLog();
    if (!waiting) waitForChange();
  } else if (logSub) {
    // Late lines can still be on their way; then the log is complete.
    const sub = logSub;
    logSub = null;
    setTimeout(() => sub.stop(), 3000);
  } else if (!logsRead) {
    readLogs();
  }
  // A finished job can still have runs whose agents have not reported
  // (an abort): read it again a few times until they have.
  if (!activePhases.has(j.phase) && runs.some((r) => r.state === 'running' || r.state === 'dispatched')) {
    if (settleTries < 10) {
      settleTries++;
      setTimeout(load, 2000);
    }
  }
}

// renderRunTables shows job j's runs: progress by agent and metrics.
function renderRunTables(j) {
  const runs = (j.jobInfo && j.jobInfo.runs) || [];
  renderMetrics(runs);
  const runsBody = byId('job-runs-rows');
  if (runs.length === 0) emptyRow(runsBody, activePhases.has(j.phase) ? 'No run has been dispatched yet.' : 'No agent ran this job.');
  else {
    runsBody.replaceChildren(...runs.map((r) => h('tr', { 'data-testid': 'run-row', dataset: { agent: r.agent, state: r.state } },
      h('td', { class: 'topic', text: r.name || r.agent }),
      h('td', {}, stateBadge(r.state)),
      h('td', { class: 'num', 'data-testid': 'run-exit-code', text: r.exitCode === null || r.exitCode === undefined ? '—' : String(r.exitCode) }),
      h('td', { class: 'num', 'data-testid': 'run-duration', text: runDuration(r) }),
      h('td', {}, timeEl(r.startTime)),
      h('td', {}, timeEl(r.endTime)),
      h('td', { class: 'wrap', text: r.error || '' }),
      h('td', {}, tails(r)))));
  }
}

// finalStates are the run states that end a run.
const finalStates = new Set(['succeeded', 'failed', 'timed_out', 'aborted', 'rejected', 'lost', 'skipped']);

// runDuration is a run's time from start to end ("… so far" while it runs).
function runDuration(r) {
  const took = elapsed(r.startTime, r.endTime);
  if (took === null) return '—';
  return fmtDuration(took) + (finalStates.has(r.state) ? '' : ' so far');
}

// outcomeText sums the runs up by state: "2 succeeded, 1 failed (of 3 runs)".
function outcomeText(phase, runs) {
  if (runs.length === 0) return phase === 'PENDING' ? 'Not run yet.' : '—';
  const counts = new Map();
  for (const r of runs) counts.set(r.state, (counts.get(r.state) || 0) + 1);
  const parts = [...counts].map(([state, n]) => `${n} ${state.replaceAll('_', ' ')}`);
  return `${parts.join(', ')} (of ${runs.length} run${runs.length === 1 ? '' : 's'})`;
}

// lastLines is the end of a text: its last n non-empty lines.
function lastLines(t, n) {
  return (t || '').split('\n').filter((l) => l.trim() !== '').slice(-n).join('\n');
}

// renderDiagnosis says, for a job that did not succeed, why: the job's
// error and, per run that did not succeed, its outcome, exit code, error
// and last stderr lines — what one would otherwise look up in a terminal.
function renderDiagnosis(j, runs) {
  const box = byId('job-diagnosis');
  const list = byId('job-diagnosis-list');
  const items = [];
  if (j.errorSummary && j.errorSummary.message) {
    items.push(h('li', { 'data-testid': 'diagnosis-job' }, h('strong', { text: 'Job: ' }), j.errorSummary.message));
  }
  for (const r of runs) {
    if (!finalStates.has(r.state) || r.state === 'succeeded') continue;
    const facts = [r.state.replaceAll('_', ' ')];
    if (r.exitCode !== null && r.exitCode !== undefined && r.state !== 'lost' && r.state !== 'skipped') facts.push(`exit code ${r.exitCode}`);
    if (r.error) facts.push(r.error);
    const stderr = lastLines(r.stderrTail, 5);
    items.push(h('li', { 'data-testid': 'diagnosis-run', dataset: { agent: r.agent } },
      h('strong', { text: `${r.agent}: ` }), facts.join(' — '),
      stderr ? h('pre', { class: 'tail', 'data-testid': 'diagnosis-stderr', text: stderr }) : ''));
  }
  box.hidden = items.length === 0;
  list.replaceChildren(...items);
}

// paramValue is a parameter's value cell: a matrix parameter (an array of
// values) shows each value apart, with their count.
function paramValue(v) {
  if (!Array.isArray(v)) return h('td', { class: 'wrap', text: v });
  return h('td', { class: 'wrap' },
    h('span', { class: 'badge', 'data-testid': 'param-matrix', text: `matrix: ${v.length} values` }), ' ',
    h('ul', { class: 'param-values' }, ...v.map((x) => h('li', {}, h('code', { 'data-testid': 'param-value', text: x })))));
}

// renderMetrics shows every run's metrics as rows: agent, metric, value.
function renderMetrics(runs) {
  const body = byId('job-metrics-rows');
  const rows = [];
  for (const r of runs) {
    if (!r.metrics || typeof r.metrics !== 'object') continue;
    for (const [name, raw] of metricLeaves(r.metrics)) {
      const value = raw === null ? 'null' : String(raw);
      rows.push(h('tr', { 'data-testid': 'metric-row', dataset: { agent: r.agent, metric: name } },
        h('td', { class: 'topic', text: r.name || r.agent }),
        h('td', { class: 'topic', text: name }),
        h('td', { class: 'num', text: value })));
    }
  }
  if (rows.length === 0) emptyRow(body, 'No metrics: they appear as runs report them.');
  else body.replaceChildren(...rows);
}

// tails shows the last output a run reported with its result.
function tails(r) {
  const parts = [];
  for (const [stream, t] of [['stdout', r.stdoutTail], ['stderr', r.stderrTail]]) {
    if (t) {
      parts.push(h('details', { 'data-testid': `run-${stream}-tail` },
        h('summary', { text: `${stream} (last ${fmtBytes(new TextEncoder().encode(t).length)})` }),
        h('pre', { class: 'tail', text: t })));
    }
  }
  return parts.length ? h('div', {}, ...parts) : '—';
}

async function load() {
  try {
    render(await api(jobPath));
    showMessage(messageEl, '');
  } catch (err) {
    showMessage(messageEl, err, 'error');
    text('job-phase', 'unknown');
  }
}

// waitForChange asks again and again while the job is active, each time
// blocking on the server until the phase changes (UWS WAIT).
async function waitForChange() {
  waiting = true;
  let failures = 0;
  while (job && activePhases.has(job.phase)) {
    try {
      const j = await api(jobPath, { query: { WAIT: String(waitSeconds), PHASE: job.phase } });
      failures = 0;
      render(j);
    } catch (err) {
      failures++;
      if (failures >= 3) showMessage(messageEl, err, 'error');
      await new Promise((r) => setTimeout(r, Math.min(30000, 1000 * 2 ** failures)));
    }
  }
  waiting = false;
}

const refreshSoon = debounce(() => load(), 1500);

// shown counts, per agent, the lines of its run shown so far (their seq);
// cutShown notes the runs whose "log cut here" marker is shown.
const shown = new Map();
const cutShown = new Set();
let logsRead = false; // the runs' logs were read once
let readingLogs = false; // meanwhile, live messages wait in held
let held = [];

function showLine(agent, stream, line) {
  const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 8;
  const empty = logList.querySelector('li.empty');
  if (empty) empty.remove();
  logList.append(h('li', { class: stream === 'stderr' ? 'stderr' : undefined, dataset: { agent } },
    h('span', { class: 'log-src', text: `[${agent} ${stream}] ` }), line));
  while (logList.children.length > maxLogLines) logList.firstElementChild.remove();
  if (followBox.checked || atBottom) logBox.scrollTop = logBox.scrollHeight;
}

function liveMessage(data) {
  let m;
  try {
    m = JSON.parse(data);
  } catch {
    return;
  }
  if (!m) return;
  if (m.event === 'end') { // the job ended: its state, and the logs now stored
    load();
    return;
  }
  // One line ({line, seq}) or, from hubs that send them in chunks, several
  // ({lines, seq}: seq numbers the first of them): one message per line.
  let msgs;
  if (typeof m.line === 'string') msgs = [m];
  else if (Array.isArray(m.lines)) {
    msgs = m.lines.filter((l) => typeof l === 'string')
      .map((line, i) => ({ agent: m.agent, stream: m.stream, line, seq: m.seq ? m.seq + i : 0 }));
  } else return;
  if (readingLogs) {
    held.push(...msgs);
    return;
  }
  msgs.forEach(showLive);
  refreshSoon();
}

function showLive(m) {
  if (m.seq) {
    if (m.seq <= (shown.get(m.agent) || 0)) return; // already in its run's log
    shown.set(m.agent, m.seq);
  }
  showLine(m.agent, m.stream, m.line);
}

// readLogs shows each run's log past what is shown already, then the
// live lines that came meanwhile.
async function readLogs() {
  if (readingLogs || !job) return;
  readingLogs = true;
  try {
    const runs = (job.jobInfo && job.jobInfo.runs) || [];
    // At most logReaders at once: a matrix job has hundreds of runs, and
    // the browser's few connections stay free for the page's other reads
    // (its matrix, a comparison).
    const texts = new Array(runs.length).fill(null);
    let next = 0;
    const reader = async () => {
      while (next < runs.length) {
        const i = next++;
        texts[i] = await runLog(runs[i]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(logReaders, runs.length) }, reader));
    // A matrix job's run is its child's (r.job), named by agent and combination.
    runs.forEach((r, i) => { if (texts[i] !== null) showRunLog(r.name || r.agent, texts[i]); });
    logsRead = true;
  } finally {
    readingLogs = false;
    const pending = held;
    held = [];
    pending.forEach(showLive);
  }
  if (logList.children.length === 0) {
    logList.append(h('li', { class: 'empty', text: activePhases.has(job.phase) ? 'No output yet: lines appear as the agents send them.' : 'No output was kept for this job.' }));
  }
}

// runLog reads one run's log (a matrix job's run: from its child job): its
// text, or null when there is none.
async function runLog(r) {
  const path = r.job ? '/api/v1/jobs/' + encodeURIComponent(r.job) : jobPath;
  try {
    const res = await fetch(url('/ui/api' + path + '/runs/' + encodeURIComponent(r.agent) + '/log'),
      { headers: { Accept: 'text/plain' }, credentials: 'same-origin' });
    return res.ok ? await res.text() : null;
  } catch {
    return null;
  }
}

// showRunLog shows the lines of a run's log ("[stdout] text",
// "[stderr] text", numbered from 1; "[switchboard] …" marks a cut) past
// those shown.
function showRunLog(agent, text) {
  let seq = 0;
  const from = shown.get(agent) || 0;
  for (const raw of text.split('\n')) {
    const m = /^\[(stdout|stderr|switchboard)\] (.*)$/.exec(raw);
    if (!m) continue;
    if (m[1] === 'switchboard') {
      if (!cutShown.has(agent)) {
        cutShown.add(agent);
        showLine(agent, 'hub', m[2]);
      }
      continue;
    }
    seq++;
    if (seq > from) showLine(agent, m[1], m[2]);
  }
  if (seq > from) shown.set(agent, seq);
}

function startLog() {
  if (logSub) return;
  logSub = subscribe(`jobs/${id}/log`, { onMessage: liveMessage, onOpen: ({ rollover }) => { if (!rollover) readLogs(); } });
}

if (runBtn) {
  runBtn.addEventListener('click', async () => {
    showMessage(actionMsg, '');
    runBtn.disabled = true;
    try {
      const j = await api(jobPath + '/phase', { method: 'POST', form: { PHASE: 'RUN' } });
      if (j && typeof j === 'object') render(j);
      else await load();
      showMessage(actionMsg, 'Run requested.');
    } catch (err) {
      showMessage(actionMsg, err, 'error');
    } finally {
      runBtn.disabled = false;
    }
  });
}

followBox.addEventListener('change', () => {
  if (followBox.checked) logBox.scrollTop = logBox.scrollHeight;
});

if (abortBtn) {
  abortBtn.addEventListener('click', async () => {
    showMessage(actionMsg, '');
    const j = await confirmAction({
      title: 'Abort job',
      text: `Abort job ${id}? Every agent still running it is told to stop its process.`,
      confirmLabel: 'Abort job',
      returnFocus: byId('main'),
      action: () => api(jobPath + '/phase', { method: 'POST', form: { PHASE: 'ABORT' } }),
    });
    if (j) {
      if (typeof j === 'object') render(j);
      else load();
      showMessage(actionMsg, 'Abort requested.');
    }
  });
}

load();
