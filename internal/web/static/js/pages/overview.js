// Overview: every node (counts, state, totals, the nodes that went down,
// the cluster's health), this node's connections by prefix, top topics,
// traffic charts, drops by reason, agents online, jobs by phase.
//
// The nodes come from /status?node=all (control.ClusterReport), then, in a
// cluster, from the summary topic's cluster section, which the server sends
// with every report and again as soon as a node comes or goes. A node on
// its own sends no such section: its row is read again from /status at
// most every nodesReloadMs, on the reports.
//
// The server renders the counters as they are when the page loads; the
// charts start from /ui/api/history (sampled every 10 s on the server);
// then every summary (stats/summary) updates the counters and adds a
// point to the charts, and the agents topic keeps the agent count.

import { api, byId, h, url, fmtBytes, fmtCount, fmtRate, fmtShortTime, emptyRow, phaseBadge, stateBadge, networkMessage, jobURL } from '../util.js';
import { subscribe } from '../live.js';
import { Chart } from '../chart.js';

const windowMs = 15 * 60 * 1000;
const gapMs = 35 * 1000;
const topTopics = 10;

const msgChart = new Chart(byId('chart-messages'), { format: fmtRate, windowMs, gapMs });
const byteChart = new Chart(byId('chart-bytes'), { format: fmtBytes, windowMs, gapMs });
const dropWindow = new Map(); // reason → drops in the window, from the history

function summarise() {
  byId('chart-messages-sum').textContent =
    `Now: ${fmtRate(msgChart.last(0))} messages/s in, ${fmtRate(msgChart.last(1))} messages/s out.`;
  byId('chart-bytes-sum').textContent =
    `Now: ${fmtBytes(byteChart.last(0))}/s in, ${fmtBytes(byteChart.last(1))}/s out.`;
  byId('ov-dashboard-traffic').textContent =
    `Of the bytes out, the dashboard's own live views (${fmtCount(dashboardConns)} connections, this page's included) received ${fmtBytes(dashboardOut)}/s; the users' traffic is the rest.`;
}

function redraw() {
  msgChart.draw();
  byteChart.draw();
  summarise();
}

async function loadHistory() {
  try {
    const hist = await api('/history');
    const pts = hist.points || [];
    const at = (p) => Date.parse(p.time);
    msgChart.set(0, pts.map((p) => [at(p), p.messages_in_per_s]));
    msgChart.set(1, pts.map((p) => [at(p), p.messages_out_per_s]));
    byteChart.set(0, pts.map((p) => [at(p), p.bytes_in_per_s]));
    byteChart.set(1, pts.map((p) => [at(p), p.bytes_out_per_s]));
    dropWindow.clear();
    for (const p of pts) {
      for (const [reason, n] of Object.entries(p.drops || {})) dropWindow.set(reason, (dropWindow.get(reason) || 0) + n);
    }
    for (const tr of byId('ov-drops').querySelectorAll('tr[data-reason]')) {
      tr.querySelector('[data-col="window"]').textContent = fmtCount(dropWindow.get(tr.dataset.reason) || 0);
    }
    for (const [reason, n] of Object.entries(hist.totals.drops || {})) {
      const cell = byId('ov-drops').querySelector(`tr[data-reason="${CSS.escape(reason)}"] [data-col="total"]`);
      if (cell) cell.textContent = fmtCount(n);
    }
  } catch (err) {
    byId('chart-messages-sum').textContent = `The history could not be loaded: ${networkMessage(err)}`;
  }
  redraw();
}

// --- nodes ---

const nodesReloadMs = 5000;
let clusterLive = false; // a cluster section came: the stats topic keeps the nodes
let nodesLoadedAt = 0;

function dropSum(drops) {
  let n = 0;
  for (const v of Object.values(drops || {})) n += Number(v) || 0;
  return n;
}

/** Shows a control.ClusterReport: a row per node, the totals, the health. */
function renderCluster(r) {
  attention.nodes = (r.nodes || []).filter((n) => n.status !== 'up' || (n.summary && n.summary.state !== 'ready'))
    .map((n) => `${n.node} (${n.status === 'up' && n.summary ? n.summary.state : n.status.replaceAll('_', ' ')})`);
  attention.health = r.health;
  renderAttention();
  const health = byId('ov-health');
  health.replaceChildren(stateBadge(r.health));
  health.dataset.health = r.health;
  byId('ov-problems').replaceChildren(...(r.problems || []).map((p) => h('li', { dataset: { code: p.code }, text: p.message })));
  const rows = (r.nodes || []).map((n) => {
    const s = n.summary;
    const state = n.status === 'up' && s ? s.state : n.status;
    const stateCell = h('td', {}, stateBadge(state));
    if (n.status === 'down' && n.down_since) stateCell.append(' ', h('span', { class: 'muted', text: `since ${fmtShortTime(n.down_since)}` }));
    if (n.error) stateCell.title = n.error;
    const num = (v) => h('td', { class: 'num', text: s ? fmtCount(v) : '—' });
    return h('tr', { 'data-testid': 'node-row', dataset: { node: n.node, status: n.status } },
      h('td', { 'data-testid': 'node-id' }, n.node, n.node === r.node ? h('span', { class: 'muted', text: ' (this node)' }) : null),
      stateCell,
      num(s && s.connections), num(s && s.topics), num(s && s.messages_in), num(s && s.messages_out), num(s && dropSum(s.drops)));
  });
  if (rows.length === 0) emptyRow(byId('ov-nodes'), 'No nodes.');
  else byId('ov-nodes').replaceChildren(...rows);
  const t = r.totals || {};
  byId('ov-nodes-up').textContent = `${fmtCount(r.members || 0)} up`;
  byId('ov-total-connections').textContent = fmtCount(t.connections || 0);
  byId('ov-total-topics').textContent = fmtCount(t.topics || 0);
  byId('ov-total-in').textContent = fmtCount(t.messages_in || 0);
  byId('ov-total-out').textContent = fmtCount(t.messages_out || 0);
  byId('ov-total-drops').textContent = fmtCount(dropSum(t.drops));
}

async function loadNodes() {
  nodesLoadedAt = Date.now();
  try {
    const r = await api('/status', { query: { node: 'all' } });
    if (!clusterLive) renderCluster(r);
  } catch (err) {
    byId('ov-health').textContent = '?';
    byId('ov-health').title = networkMessage(err);
  }
}

// --- live: the summary topic ---
//
// The Overview reads stats/summary (control.Summary), the node's aggregates:
// a few KiB a report whatever the number of connections, where the stats
// topic carries every connection. Rates are the differences of the node's
// counters between two summaries; the dashboard's own live views are
// summed apart, and their traffic written out apart from the users'.

let prevTotals = null; // {at, totals, dashboard} of the previous summary

function onSummary(s, now) {
  if (!clusterLive && now - nodesLoadedAt >= nodesReloadMs) loadNodes();
  byId('ov-connections').textContent = fmtCount(s.connections || 0);
  byId('ov-topics').textContent = fmtCount(s.topics || 0);

  const pbody = byId('ov-prefixes');
  const prows = Object.entries(s.by_prefix || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  if (prows.length === 0) emptyRow(pbody, 'No connections.');
  else pbody.replaceChildren(...prows.map(([p, n]) => h('tr', {}, h('td', { text: p }), h('td', { class: 'num', text: fmtCount(n) }))));

  const tbody = byId('ov-topics-rows');
  const trows = (s.top_topics || []).slice(0, topTopics);
  if (trows.length === 0) emptyRow(tbody, 'No topic carried a message since the last report.');
  else {
    tbody.replaceChildren(...trows.map((t) => h('tr', {},
      h('td', { class: 'topic', text: t.topic }), h('td', { class: 'num', text: fmtCount(t.connections) }),
      h('td', { class: 'num', text: fmtBytes(t.bytes_in) }), h('td', { class: 'num', text: fmtBytes(t.bytes_out) }))));
  }

  const open = s.open_drops || {};
  for (const tr of byId('ov-drops').querySelectorAll('tr[data-reason]')) {
    tr.querySelector('[data-col="open"]').textContent = fmtCount(open[tr.dataset.reason] || 0);
  }
  const totalDrops = (s.totals && s.totals.drops) || {};
  for (const [reason, n] of Object.entries(totalDrops)) {
    const cell = byId('ov-drops').querySelector(`tr[data-reason="${CSS.escape(reason)}"] [data-col="total"]`);
    if (cell) cell.textContent = fmtCount(n);
  }

  const t = s.totals || {};
  const d = s.dashboard || {};
  if (prevTotals && now - prevTotals.at >= 1000) {
    const secs = (now - prevTotals.at) / 1000;
    const rate = (cur, old) => Math.max(0, (cur || 0) - (old || 0)) / secs;
    const p = prevTotals.totals;
    msgChart.add(0, now, rate(t.messages_in, p.messages_in));
    msgChart.add(1, now, rate(t.messages_out, p.messages_out));
    byteChart.add(0, now, rate(t.bytes_in, p.bytes_in));
    byteChart.add(1, now, rate(t.bytes_out, p.bytes_out));
    dashboardOut = rate(d.bytes_out, prevTotals.dashboard.bytes_out);
    const oldDrops = p.drops || {};
    attention.drops = Object.entries(t.drops || {}).map(([reason, n]) => [reason, rate(n, oldDrops[reason])]).filter(([, r]) => r > 0);
    renderAttention();
    redraw();
  }
  dashboardConns = d.connections || 0;
  if (!prevTotals || now - prevTotals.at >= 1000) prevTotals = { at: now, totals: t, dashboard: d };
}

let dashboardOut = 0; // bytes/s the dashboard's live views received, last interval
let dashboardConns = 0;

function subscribeSummary() {
  subscribe('stats/summary', {
    onOpen: () => { prevTotals = null; },
    onMessage: (data) => {
      let m;
      try {
        m = JSON.parse(data);
      } catch {
        return;
      }
      if (!m || typeof m !== 'object') return;
      if (m.cluster && typeof m.cluster === 'object') {
        clusterLive = true;
        renderCluster(m.cluster);
        return;
      }
      onSummary(m, Date.now());
    },
  });
}

// --- what needs attention ---
//
// Agents offline (from the agents list, kept by the agents topic), jobs
// that ended in ERROR in the last hour (read on load and every
// failedEveryMs), drops with their rates per reason (from the summaries),
// nodes not up and ready (from the cluster report).

const failedWindowMs = 60 * 60 * 1000;
const failedEveryMs = 60 * 1000;
const attention = { agentsKnown: false, failed: null, drops: [], nodes: [], health: 'ok' };

async function loadFailedJobs() {
  try {
    // The newest failed jobs, those that ended within the hour (a job
    // created earlier may have failed since).
    const res = await api('/api/v1/jobs', { query: { PHASE: 'ERROR', LAST: '200' } });
    const since = Date.now() - failedWindowMs;
    attention.failed = (res.jobs || []).filter((j) => Date.parse(j.endTime || j.creationTime) >= since);
  } catch (err) {
    attention.failed = null;
  }
  renderAttention();
  setTimeout(loadFailedJobs, failedEveryMs);
}

function renderAttention() {
  const items = [];
  const offline = [...agents].filter(([, on]) => !on).map(([id]) => id).sort();
  if (attention.agentsKnown && offline.length > 0) {
    items.push(h('li', { 'data-testid': 'attention-item', dataset: { kind: 'agents-offline' } },
      h('a', { href: url('/ui/agents'), text: `${fmtCount(offline.length)} agent${offline.length === 1 ? '' : 's'} offline` }),
      h('span', { class: 'muted', text: `: ${offline.slice(0, 10).join(', ')}${offline.length > 10 ? ', …' : ''}` })));
  }
  if (attention.failed && attention.failed.length > 0) {
    const jobs = attention.failed;
    items.push(h('li', { 'data-testid': 'attention-item', dataset: { kind: 'jobs-failed' } },
      h('a', { href: url('/ui/jobs') + '?phase=ERROR', text: `${fmtCount(jobs.length)} job${jobs.length === 1 ? '' : 's'} failed in the last hour` }),
      h('span', { class: 'muted' }, ': ', ...jobs.slice(0, 5).flatMap((j, i) => [i ? ', ' : '', h('a', { href: jobURL(j.jobId), text: j.jobId })]),
        jobs.length > 5 ? ', …' : '')));
  }
  if (attention.drops.length > 0) {
    items.push(h('li', { 'data-testid': 'attention-item', dataset: { kind: 'drops' } }, 'Messages dropped',
      h('span', { class: 'muted', text: ': ' + attention.drops.map(([reason, r]) => `${reason} ${fmtRate(r)}/s`).join(', ') })));
  }
  if (attention.nodes.length > 0 || attention.health === 'degraded') {
    items.push(h('li', { 'data-testid': 'attention-item', dataset: { kind: 'nodes' } }, 'Cluster degraded',
      h('span', { class: 'muted', text: attention.nodes.length ? ': ' + attention.nodes.join(', ') : '' })));
  }
  if (items.length === 0) items.push(h('li', { class: 'muted', 'data-testid': 'attention-none', text: 'Nothing needs attention: every agent online, no job failed in the last hour, no drops, every node up.' }));
  byId('attention-list').replaceChildren(...items);
}

// --- agents and jobs ---

const agents = new Map(); // id → connected

function renderAgents() {
  let n = 0;
  for (const on of agents.values()) if (on) n++;
  byId('ov-agents-online').textContent = fmtCount(n);
}

async function loadAgents() {
  try {
    const res = await api('/api/v1/agents');
    agents.clear();
    for (const a of res.agents || []) agents.set(a.id, a.connected);
    renderAgents();
    attention.agentsKnown = true;
    renderAttention();
  } catch (err) {
    byId('ov-agents-online').textContent = '?';
    byId('ov-agents-online').title = networkMessage(err);
  }
}

async function loadJobs() {
  const tbody = byId('ov-phases');
  try {
    const res = await api('/api/v1/jobs');
    const by = new Map();
    for (const j of res.jobs || []) by.set(j.phase, (by.get(j.phase) || 0) + 1);
    const rows = [...by].sort((a, b) => a[0].localeCompare(b[0]));
    if (rows.length === 0) emptyRow(tbody, 'No jobs.');
    else tbody.replaceChildren(...rows.map(([p, n]) => h('tr', { dataset: { phaseRow: p } }, h('td', {}, phaseBadge(p)), h('td', { class: 'num', text: fmtCount(n) }))));
  } catch (err) {
    emptyRow(tbody, `Jobs could not be listed: ${networkMessage(err)}`);
  }
}

loadHistory();
loadJobs();
loadFailedJobs();
loadAgents();
loadNodes();
subscribeSummary();
let agentsOpened = false;
subscribe('agents', {
  onOpen: ({ rollover }) => {
    // After a reconnect, events may have been missed: read the list again.
    if (agentsOpened && !rollover) loadAgents();
    agentsOpened = true;
  },
  onMessage: (data) => {
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    if (!ev || !ev.agent) return;
    if (ev.event === 'forgotten') agents.delete(ev.agent.id);
    else agents.set(ev.agent.id, ev.event === 'connected');
    renderAgents();
    renderAttention();
  },
});
