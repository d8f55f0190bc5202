// Overview: every node (counts, state, totals, the nodes that went down,
// the cluster's health), this node's connections by prefix, top topics,
// traffic charts, drops by reason, agents online, jobs by phase.
//
// The nodes come from /status?node=all (control.ClusterReport), then, in a
// cluster, from the stats topic's cluster section, which the server sends
// with every report and again as soon as a node comes or goes. A node on
// its own sends no such section: its row is read again from /status at
// most every nodesReloadMs, on the reports.
//
// The server renders the counters as they are when the page loads; the
// charts start from /ui/api/history (sampled every 10 s on the server);
// then every report on the stats topic updates the counters and adds a
// point to the charts, and the agents topic keeps the agent count.

import { api, byId, h, fmtBytes, fmtCount, fmtRate, fmtShortTime, emptyRow, phaseBadge, stateBadge, networkMessage } from '../util.js';
import { subscribe } from '../live.js';
import { subscribeStats } from '../stats.js';
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

// --- live: the stats topic ---

let prev = null; // id → counters of the previous report
let prevAt = 0;

function onReport(conns, now) {
  if (!clusterLive && now - nodesLoadedAt >= nodesReloadMs) loadNodes();
  byId('ov-connections').textContent = fmtCount(conns.length);
  const prefixes = new Map();
  const topics = new Map();
  const drops = new Map();
  for (const c of conns) {
    prefixes.set(c.prefix, (prefixes.get(c.prefix) || 0) + 1);
    let t = topics.get(c.topic);
    if (!t) topics.set(c.topic, (t = { topic: c.topic, n: 0, bin: 0, bout: 0 }));
    t.n++;
    t.bin += c.bytes_in;
    t.bout += c.bytes_out;
    for (const [reason, n] of Object.entries(c.drops || {})) drops.set(reason, (drops.get(reason) || 0) + n);
  }
  byId('ov-topics').textContent = fmtCount(topics.size);

  const pbody = byId('ov-prefixes');
  const prows = [...prefixes].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  if (prows.length === 0) emptyRow(pbody, 'No connections.');
  else pbody.replaceChildren(...prows.map(([p, n]) => h('tr', {}, h('td', { text: p }), h('td', { class: 'num', text: fmtCount(n) }))));

  const tbody = byId('ov-topics-rows');
  const trows = [...topics.values()].sort((a, b) => b.n - a.n || (b.bin + b.bout) - (a.bin + a.bout) || a.topic.localeCompare(b.topic)).slice(0, topTopics);
  if (trows.length === 0) emptyRow(tbody, 'No topics.');
  else {
    tbody.replaceChildren(...trows.map((t) => h('tr', {},
      h('td', { class: 'topic', text: t.topic }), h('td', { class: 'num', text: fmtCount(t.n) }),
      h('td', { class: 'num', text: fmtBytes(t.bin) }), h('td', { class: 'num', text: fmtBytes(t.bout) }))));
  }

  for (const tr of byId('ov-drops').querySelectorAll('tr[data-reason]')) {
    tr.querySelector('[data-col="open"]').textContent = fmtCount(drops.get(tr.dataset.reason) || 0);
  }

  // Rates: what the connections of this report did since the previous
  // one (a connection that closed in between is not counted).
  const cur = new Map();
  let mi = 0; let mo = 0; let bi = 0; let bo = 0;
  for (const c of conns) {
    cur.set(c.id, c);
    const p = prev ? prev.get(c.id) : undefined;
    mi += c.messages_in - (p ? p.messages_in : 0);
    mo += c.messages_out - (p ? p.messages_out : 0);
    bi += c.bytes_in - (p ? p.bytes_in : 0);
    bo += c.bytes_out - (p ? p.bytes_out : 0);
  }
  if (prev && now - prevAt >= 1000) {
    const secs = (now - prevAt) / 1000;
    msgChart.add(0, now, Math.max(0, mi) / secs);
    msgChart.add(1, now, Math.max(0, mo) / secs);
    byteChart.add(0, now, Math.max(0, bi) / secs);
    byteChart.add(1, now, Math.max(0, bo) / secs);
    redraw();
  }
  if (!prev || now - prevAt >= 1000) {
    prev = cur;
    prevAt = now;
  }
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
loadAgents();
loadNodes();
subscribeStats(onReport, (r) => {
  clusterLive = true;
  renderCluster(r);
});
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
    agents.set(ev.agent.id, ev.event === 'connected');
    renderAgents();
  },
});
