// Live data through the relay itself.
//
// subscribe(topic, {onMessage, onOpen}) keeps a websocket open on a
// system topic, connecting in one step (the token in the handshake):
//
//   GET  /ui/api/live-token?topic=T   → {token, topic, prefix, expires_at}
//   new WebSocket(ws(s)://this origin/{prefix}/{topic},
//                 ["switchboard.v1", "switchboard.bearer." + token])
//
// A browser does not say why a handshake was refused, so when a one-step
// connect closes before it opened, the next attempt, at once, is the
// two-step flow, whose access request answers with the reason (and which
// also serves a relay without the one-step connect):
//
//   POST /{prefix}/{topic}  (Bearer)  → {uri}
//   new WebSocket(uri)
//
// The subprotocol names are pkg/wire's Subprotocol and
// BearerSubprotocolPrefix (docs/protocol.md, "Connect in one step").
//
// When the connection ends it does it all again, with exponential
// backoff (0.5 s doubling to 15 s, with jitter), and the page's status
// line (#live-status, role=status) says "Reconnecting…" meanwhile. The
// token is short-lived and the relay closes a connection when its token
// expires (4001), so shortly before that a second connection is opened
// and the first closed once the second is up: no gap, no "reconnecting".
// There are no polling loops: every update is a message on the topic, or
// (poll) a fetch made when a message on a topic says there is news.
//
// Stale data is marked: while a subscription is not live (reconnecting or
// failed), <body data-stale> is set and every element of class live-data
// (the figures and lists the live feed keeps current) is greyed and gets a
// note "Not live: as of HH:MM:SS" (data-testid stale-note), the time of the
// last data the feed brought (its last message, or when it opened).

import { url, apiError, ApiError, h } from './util.js';

const subscriptions = new Set();

/**
 * The page's own live connections: [{topic, openedAt}] (ms) of each
 * subscription's open websocket, so a page listing connections can tell
 * its own.
 */
export function liveConnections() {
  return [...subscriptions].filter((s) => s.ws !== null).map((s) => ({ topic: s.topic, openedAt: s.openedAt }));
}

/** Subscribes to topic; returns an object with stop(). */
export function subscribe(topic, { onMessage, onOpen } = {}) {
  const s = new LiveSubscription(topic, onMessage || (() => {}), onOpen || (() => {}));
  s.start();
  return s;
}

/**
 * A fetch kept current: calls fetchOnce() (which returns a promise) now
 * and again at each now() — a notice on a live topic, a view that changed
 * — one call at a time (a now() during a call runs another after it).
 * While its calls fail it tries again with backoff and counts as a feed
 * that is down (the status line says so and the page's live data is
 * marked stale); a 401 stops it. Returns an object with now() and stop().
 */
export function poll(name, fetchOnce) {
  const p = new LivePoll(name, fetchOnce);
  p.start();
  return p;
}

class LivePoll {
  constructor(name, fetchOnce) {
    this.topic = name;
    this.fetchOnce = fetchOnce;
    this.ws = null; // not a connection: liveConnections leaves it out
    this.state = 'connecting';
    this.reason = '';
    this.dataAt = 0;
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.running = false;
    this.again = false; // now() was called during a call
  }

  start() {
    subscriptions.add(this);
    renderStatus();
    this.now();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    subscriptions.delete(this);
    renderStatus();
  }

  async now() {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.running = true;
    let wait = null; // no call until the next now()
    try {
      await this.fetchOnce();
      this.attempt = 0;
      this.dataAt = Date.now();
      this.state = 'live';
      this.reason = '';
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        this.running = false;
        this.state = 'failed';
        this.reason = 'Live updates stopped: you are signed out. Reload the page to sign in again.';
        renderStatus();
        return;
      }
      wait = Math.min(backoffMax, backoffBase * 2 ** this.attempt) * (0.8 + 0.4 * Math.random());
      this.attempt++;
      this.state = 'reconnecting';
      this.reason = err.message;
    }
    this.running = false;
    renderStatus();
    if (this.stopped) return;
    if (this.again) {
      this.again = false;
      wait = 0;
    }
    if (wait !== null) this.timer = setTimeout(() => this.now(), wait);
  }
}

const relaySubprotocol = 'switchboard.v1'; // wire.Subprotocol
const bearerSubprotocolPrefix = 'switchboard.bearer.'; // wire.BearerSubprotocolPrefix

// wsURL is the websocket URL of a relay path on this page's origin.
function wsURL(path) {
  const u = new URL(url(path), window.location.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

const backoffBase = 500;
const backoffMax = 15000;
const rolloverLead = 30000; // open the next connection this long before the token expires
const stableAfter = 10000; // a connection open this long resets the backoff

class LiveSubscription {
  constructor(topic, onMessage, onOpen) {
    this.topic = topic;
    this.onMessage = onMessage;
    this.onOpen = onOpen;
    this.ws = null; // the connection whose messages are delivered
    this.pending = null; // a connection being opened
    this.state = 'connecting';
    this.reason = '';
    this.attempt = 0;
    this.retryTimer = null;
    this.rolloverTimer = null;
    this.stopped = false;
    this.openedAt = 0;
    this.twoStep = false; // the next connect uses the two-step flow
    this.dataAt = 0; // when the feed last brought data (opened or a message); 0: not yet
  }

  start() {
    subscriptions.add(this);
    this.setState('connecting');
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.rolloverTimer);
    for (const ws of [this.ws, this.pending]) {
      if (ws) {
        ws.onclose = null;
        ws.close(1000, 'page closed');
      }
    }
    this.ws = this.pending = null;
    subscriptions.delete(this);
    renderStatus();
  }

  setState(state, reason = '') {
    this.state = state;
    this.reason = reason;
    renderStatus();
  }

  // connect opens a connection; when one is already live (a rollover) it
  // replaces it once open.
  async connect() {
    if (this.stopped || this.pending) return;
    const rollover = this.ws !== null;
    const oneStep = !this.twoStep;
    let tok;
    let ws;
    try {
      const res = await fetch(url('/ui/api/live-token?topic=' + encodeURIComponent(this.topic)), {
        headers: { Accept: 'application/json' }, credentials: 'same-origin',
      });
      if (!res.ok) throw await apiError(res);
      tok = await res.json();
      const path = '/' + tok.prefix + '/' + tok.topic;
      if (oneStep) {
        if (this.stopped) return;
        ws = new WebSocket(wsURL(path), [relaySubprotocol, bearerSubprotocolPrefix + tok.token]);
      } else {
        const acc = await fetch(url(path), {
          method: 'POST', headers: { Authorization: 'Bearer ' + tok.token, Accept: 'application/json' }, credentials: 'omit',
        });
        if (!acc.ok) throw await apiError(acc);
        const { uri } = await acc.json();
        if (this.stopped) return;
        ws = new WebSocket(uri);
      }
    } catch (err) {
      this.failed(err, rollover);
      return;
    }
    this.pending = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (this.stopped) {
        ws.close(1000);
        return;
      }
      const old = this.ws;
      clearTimeout(this.retryTimer);
      this.pending = null;
      this.twoStep = false; // the next connect tries one step again
      this.ws = ws;
      this.openedAt = Date.now();
      this.dataAt = this.openedAt;
      if (old) {
        old.onclose = null;
        old.onmessage = null;
        old.close(1000, 'replaced');
      }
      this.setState('live');
      this.scheduleRollover(tok.expires_at);
      try {
        this.onOpen({ rollover: old !== null });
      } catch (err) {
        reportError(err);
      }
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.dataAt = Date.now();
      try {
        this.onMessage(ev.data);
      } catch (err) {
        reportError(err);
      }
    };
    ws.onclose = (ev) => {
      if (this.stopped) return;
      if (ws === this.pending) { // never opened
        this.pending = null;
        if (oneStep) { // refused, or no one-step connect here: two steps tell why
          this.twoStep = true;
          this.connect();
          return;
        }
        this.failed(new Error(`the websocket closed before it opened (${ev.code})`), rollover && this.ws !== null);
        return;
      }
      if (ws !== this.ws) return;
      this.ws = null;
      clearTimeout(this.rolloverTimer);
      if (Date.now() - this.openedAt > stableAfter) this.attempt = 0;
      if (ev.code === 4001 && this.attempt === 0) { // token expired: a new one at once
        this.attempt = 1;
        this.setState('connecting');
        this.connect();
        return;
      }
      this.retry(closeReason(ev));
    };
  }

  failed(err, rollover) {
    if (this.stopped) return;
    if (err instanceof ApiError && (err.status === 401 || (err.status === 403 && err.code !== 'token_revoked' && err.code !== 'booking_denied') || err.status === 400 || err.status === 404)) {
      // Retrying cannot help: signed out, not allowed, or no such topic.
      if (rollover) return; // the live connection carries on until it ends
      this.setState('failed', err.status === 401 ? 'Live updates stopped: you are signed out. Reload the page to sign in again.'
        : `Live updates unavailable: ${err.message}`);
      return;
    }
    if (rollover) { // keep the live connection; try again a little later
      clearTimeout(this.rolloverTimer);
      this.rolloverTimer = setTimeout(() => this.connect(), 5000);
      return;
    }
    this.retry(err.message);
  }

  retry(reason) {
    const delay = Math.min(backoffMax, backoffBase * 2 ** this.attempt) * (0.8 + 0.4 * Math.random());
    this.attempt++;
    this.setState('reconnecting', reason);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  scheduleRollover(expiresAt) {
    clearTimeout(this.rolloverTimer);
    const exp = Date.parse(expiresAt);
    if (Number.isNaN(exp)) return;
    const wait = Math.max(5000, exp - Date.now() - rolloverLead);
    this.rolloverTimer = setTimeout(() => this.connect(), wait);
  }
}

function closeReason(ev) {
  const codes = {
    1001: 'the server is shutting down', 1006: 'the connection was lost', 1008: 'policy violation',
    1011: 'server error', 4001: 'the token expired', 4003: 'access was revoked', 4008: 'too slow to keep up',
  };
  return codes[ev.code] || (ev.reason ? ev.reason : `closed (${ev.code})`);
}

function reportError(err) {
  // A bug in a page's handler must not stop the subscription.
  setTimeout(() => { throw err; });
}

// The status line shows the worst state of the page's subscriptions.
function renderStatus() {
  const el = document.getElementById('live-status');
  if (!el) return;
  const subs = [...subscriptions];
  if (subs.length === 0) {
    el.hidden = true;
    el.dataset.state = 'idle';
    return;
  }
  let state = 'live';
  let text = 'Live';
  const failed = subs.find((s) => s.state === 'failed');
  const reconnecting = subs.find((s) => s.state === 'reconnecting');
  if (failed) {
    state = 'failed';
    text = failed.reason;
  } else if (reconnecting) {
    state = 'reconnecting';
    text = 'Reconnecting… live updates are interrupted';
    el.title = reconnecting.reason;
  } else if (subs.some((s) => s.state === 'connecting')) {
    state = 'connecting';
    text = 'Connecting to live updates…';
  }
  if (state !== 'reconnecting') el.removeAttribute('title');
  if (state === 'reconnecting' || state === 'failed') {
    // The page's data is as old as the oldest feed that is down; a feed
    // never opened has what the page was rendered with.
    const down = subs.filter((s) => s.state === 'reconnecting' || s.state === 'failed');
    const asOf = Math.min(...down.map((s) => s.dataAt || Math.round(performance.timeOrigin)));
    text += ` — figures as of ${clock(asOf)}`;
    markStale(asOf);
  } else {
    markStale(null);
  }
  el.hidden = false;
  el.dataset.state = state;
  if (el.textContent !== text) el.textContent = text;
}

const two = (n) => String(n).padStart(2, '0');

/** "14:05:09" in local time. */
function clock(ms) {
  const d = new Date(ms);
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

// markStale greys the page's live data with a note of its age (asOf, ms),
// or, with null, shows it as current again.
function markStale(asOf) {
  const body = document.body;
  if (asOf === null) {
    if (!body.hasAttribute('data-stale')) return;
    body.removeAttribute('data-stale');
    for (const el of document.querySelectorAll('.live-data')) {
      el.removeAttribute('data-stale');
      const note = el.querySelector(':scope > .stale-note');
      if (note) note.remove();
    }
    return;
  }
  body.dataset.stale = 'true';
  const text = `Not live: as of ${clock(asOf)}`;
  for (const el of document.querySelectorAll('.live-data')) {
    el.dataset.stale = 'true';
    let note = el.querySelector(':scope > .stale-note');
    if (!note) {
      note = h('p', { class: 'stale-note', 'data-testid': 'stale-note', role: 'note' });
      const heading = el.querySelector(':scope > h2');
      if (heading) heading.after(note);
      else el.prepend(note);
    }
    if (note.textContent !== text) note.textContent = text;
  }
}
