// The stats topic: the relay's status report, one object per open
// connection (control.ConnReport: topic, prefix, scopes, sub, booking_id,
// remote_addr, user_agent, connected_at, expires_at, messages_in/out,
// bytes_in/out, drops by reason…), every few seconds and within about a
// second of any connect or disconnect.
//
// A report too large for one relay message arrives as several messages
// sent back to back, each a JSON array of some of the connections, in
// ascending id order across the messages. A message that starts above the
// id where the previous one ended therefore continues the report; one that
// starts at or below it (or an empty one) starts a new report. (Two
// reports in a row share at least the page's own connection, so a new one
// never looks like a continuation; onOpen starts afresh when the page's
// connection changes.) No message says it is the last part: a report is
// shown once no further part has followed within partWait ms, and shown
// again, longer, if a part that continues it comes later still (on a busy
// machine the parts can be seconds apart): a late part is never mistaken
// for a report of its own.
//
// In a cluster, each report is followed by one more message, an object
// {"cluster": …} (control.ClusterReport: every node's summary, the
// totals, the health and the nodes that went down); it is sent again at
// once when a node comes or goes. It is passed to onCluster, never mixed
// into the connections (which are this node's only).

import { subscribe } from './live.js';

const partWait = 120;

/**
 * Calls onReport(connections, receivedAtMs) for every complete report, and
 * onCluster(clusterReport), if given, for every cluster section.
 */
export function subscribeStats(onReport, onCluster) {
  let report = null; // the connections of the latest report so far
  let lastID = -1;
  let timer = null;
  const show = () => {
    timer = null;
    if (report !== null) onReport(report.slice(), Date.now());
  };
  return subscribe('stats', {
    onOpen: () => {
      // A new connection (or a rollover): a report in progress may be
      // incomplete; the next one is on its way.
      clearTimeout(timer);
      timer = null;
      report = null;
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
      if (!Array.isArray(part)) {
        if (onCluster && part && typeof part.cluster === 'object' && part.cluster !== null) onCluster(part.cluster);
        return;
      }
      const continues = report !== null && part.length > 0 && Number(part[0].id) > lastID;
      if (continues) {
        for (const c of part) report.push(c);
      } else {
        report = part;
      }
      if (part.length > 0) lastID = Number(part[part.length - 1].id);
      clearTimeout(timer);
      timer = setTimeout(show, partWait);
    },
  });
}

/** The sum of a connection's drops over every reason. */
export function dropTotal(c) {
  let n = 0;
  for (const v of Object.values(c.drops || {})) n += Number(v) || 0;
  return n;
}
