// Helpers for the relay's connection reports (control.ConnReport, as on
// the stats topic and in GET /api/v1/connections' rows).
//
// The Connections page no longer reads the stats topic (every connection,
// about 530 B each, at every stats period): it asks the server for the
// page it shows (pages/connections.js). The stats topic stays for
// practable-format consumers.

/** The sum of a connection's drops over every reason. */
export function dropTotal(c) {
  let n = 0;
  for (const v of Object.values(c.drops || {})) n += Number(v) || 0;
  return n;
}
