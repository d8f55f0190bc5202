// The stats topic: the relay's status report, one object per open
// connection (control.ConnReport: topic, prefix, scopes, sub, booking_id,
// remote_addr, user_agent, connected_at, expires_at, messages_in/out,
// bytes_in/out, drops by reason…), every few seconds and within about a
// second of any connect or disconnect.
//
// A report too large for one relay message arrives as several messages
// sent back to back, each a JSON array of some of the connections, in
// ascending id order across the messages. A message that starts at or
// below the id where the previous one ended therefore starts a new report;
// otherwise the report is complete when no further part follows within
// partWait ms.

import { subscribe } from './live.js';

const partWait = 120;

/** Calls onReport(connections, receivedAtMs) for every complete report. */
export function subscribeStats(onReport) {
  let parts = null;
  let lastID = -1;
  let timer = null;
  const flush = () => {
    clearTimeout(timer);
    timer = null;
    if (parts === null) return;
    const report = parts.flat();
    parts = null;
    lastID = -1;
    onReport(report, Date.now());
  };
  return subscribe('stats', {
    onOpen: () => {
      // A new connection (or a rollover): a report in progress may be
      // incomplete; the next one is on its way.
      clearTimeout(timer);
      parts = null;
      lastID = -1;
    },
    onMessage: (data) => {
      if (typeof data !== 'string') return;
      let part;
      try {
        part = JSON.parse(data);
      } catch {
        return;
      }
      if (!Array.isArray(part)) return;
      if (parts !== null && part.length > 0 && Number(part[0].id) <= lastID) flush();
      if (parts === null) parts = [];
      parts.push(part);
      if (part.length > 0) lastID = Number(part[part.length - 1].id);
      clearTimeout(timer);
      timer = setTimeout(flush, partWait);
    },
  });
}

/** The sum of a connection's drops over every reason. */
export function dropTotal(c) {
  let n = 0;
  for (const v of Object.values(c.drops || {})) n += Number(v) || 0;
  return n;
}
