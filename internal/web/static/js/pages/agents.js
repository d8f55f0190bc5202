// Agents: every agent with its labels, actions and running jobs. The list
// comes from /api/v1/agents; the agents topic then says at once when one
// connects, disconnects or is forgotten, so rows appear and leave as it
// happens. After a reconnect the list is read again, since events may have
// been missed. Operators can forget an offline agent (a decommissioned
// one), after a confirmation: later jobs no longer target it.

import { api, atLeast, byId, h, fmtCount, timeEl, emptyRow, showMessage, jobURL, stateBadge } from '../util.js';
import { subscribe } from '../live.js';
import { confirmAction } from '../dialog.js';
import './agents_enrol.js'; // the enrol form (operators)

const tbody = byId('agents-rows');
const countEl = byId('agents-count');
const offlineBox = byId('agents-offline');
const messageEl = byId('agents-message');
const canOperate = atLeast('operator');

const agents = new Map(); // id → agent (as the API shows it)
let loaded = false;
let pendingEvents = null; // events that arrived while the list was being read

function tags(items, cls = 'tag') {
  if (!items || items.length === 0) return h('span', { class: 'muted', text: '—' });
  return h('ul', { class: 'tags' }, items.map((t) => h('li', { class: cls, text: t })));
}

function actionList(actions) {
  if (!actions || actions.length === 0) return h('span', { class: 'muted', text: '—' });
  return h('ul', { class: 'tags' }, actions.map((a) => {
    const params = (a.params || []).map((p) => `${p.name} (${p.type}${p.required ? ', required' : ''})`).join(', ');
    const title = [a.description, params ? `Parameters: ${params}` : 'No parameters'].filter(Boolean).join('. ');
    return h('li', { class: 'tag', title, text: a.name });
  }));
}

function jobLinks(ids) {
  if (!ids || ids.length === 0) return h('span', { class: 'muted', text: 'none' });
  return h('ul', { class: 'tags' }, ids.map((id) => h('li', {}, h('a', { href: jobURL(id), text: id }))));
}

function render() {
  const showOffline = offlineBox.checked;
  const all = [...agents.values()].sort((a, b) => (b.connected - a.connected) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const rows = all.filter((a) => showOffline || a.connected);
  const online = all.filter((a) => a.connected).length;
  countEl.textContent = `${fmtCount(online)} online, ${fmtCount(all.length - online)} offline` + (showOffline ? '' : ' (offline agents hidden)');
  if (!loaded) return;
  if (rows.length === 0) {
    emptyRow(tbody, all.length === 0 ? 'No agent has connected yet.' : 'No agent is online.');
    return;
  }
  tbody.replaceChildren(...rows.map((a) => h('tr', { 'data-testid': 'agent-row', dataset: { agentId: a.id, connected: String(a.connected) } },
    h('td', { class: 'topic', text: a.id }),
    h('td', {}, stateBadge(a.connected ? 'online' : 'offline')),
    h('td', {}, tags(a.labels)),
    h('td', {}, actionList(a.actions)),
    h('td', {}, jobLinks(a.runningJobs)),
    h('td', { text: a.version || '—' }),
    h('td', { text: a.node || '—' }),
    h('td', { text: a.remoteAddr || '—' }),
    h('td', {}, timeEl(a.lastSeen)),
    canOperate ? h('td', {}, forgetButton(a)) : null)));
}

// forgetButton offers to forget an offline agent; a connected one cannot be.
function forgetButton(a) {
  if (a.connected) return null;
  return h('button', {
    type: 'button', class: 'small danger', 'data-testid': 'agent-forget', dataset: { agentId: a.id },
    'aria-label': `Forget agent ${a.id}`, text: 'Forget',
  });
}

tbody.addEventListener('click', async (ev) => {
  const btn = ev.target.closest('button[data-testid="agent-forget"]');
  if (!btn) return;
  const id = btn.dataset.agentId;
  showMessage(messageEl, '');
  const done = await confirmAction({
    title: 'Forget agent',
    text: `Forget agent “${id}”? Jobs created from now on no longer target it, even when their labels match; ` +
      'its runs in past jobs are kept. If it connects again, it is known again. This is recorded in the audit log under your name.',
    confirmLabel: 'Forget agent',
    returnFocus: tbody.closest('.table-wrap'),
    action: () => api(`/api/v1/agents/${encodeURIComponent(id)}`, { method: 'DELETE' }),
  });
  if (done) {
    agents.delete(id);
    showMessage(messageEl, `Agent “${id}” is forgotten.`);
    render();
  }
});

function apply(ev) {
  if (!ev || !ev.agent || !ev.agent.id) return;
  if (ev.event === 'forgotten') {
    agents.delete(ev.agent.id);
    return;
  }
  const a = { ...ev.agent, connected: ev.event === 'connected' };
  agents.set(a.id, a);
}

async function load() {
  pendingEvents = [];
  try {
    const res = await api('/api/v1/agents');
    agents.clear();
    for (const a of res.agents || []) agents.set(a.id, a);
    for (const ev of pendingEvents) apply(ev); // newer than the list
    loaded = true;
    showMessage(messageEl, '');
  } catch (err) {
    showMessage(messageEl, err, 'error');
    if (!loaded) emptyRow(tbody, 'The agents could not be listed.');
  } finally {
    pendingEvents = null;
  }
  render();
}

offlineBox.addEventListener('change', render);

load();
let opened = false;
subscribe('agents', {
  onOpen: ({ rollover }) => {
    if (opened && !rollover) load();
    opened = true;
  },
  onMessage: (data) => {
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    apply(ev);
    if (pendingEvents) pendingEvents.push(ev);
    render();
  },
});
