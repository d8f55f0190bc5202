// Form checks that mirror the server's, with its messages: job targets
// (internal/jobs parseTargets), topic names (internal/topic), revocation
// values and reasons (internal/control checkValue), durations
// (time.ParseDuration as control's JSON reads a "ttl"). No DOM here.

import { byteLength, goQuote } from './params.js';

const encoder = new TextEncoder();

// --- topics (internal/topic) ---

export const maxTopicLength = 255;
export const maxSegmentLength = 64;

const unreserved = (b) => (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) ||
  b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e;

/** Go's %q of a byte as a rune: 'a', '\x01', 'Ã'. */
function quoteByte(b) {
  const q = goQuote(encoder.encode(String.fromCodePoint(b)));
  const inner = q.slice(1, -1).replace('\\"', '"');
  return "'" + (inner === "'" ? "\\'" : inner) + "'";
}

/** topic.Valid's error message for name, or null. */
export function topicError(name) {
  if (name === '') return 'topic: invalid: empty name';
  const b = encoder.encode(name);
  if (b.length > maxTopicLength) return `topic: invalid: longer than ${maxTopicLength} bytes`;
  let start = 0;
  for (let i = 0; i <= b.length; i++) {
    if (i < b.length && b[i] !== 0x2f) {
      if (!unreserved(b[i])) return `topic: invalid: character ${quoteByte(b[i])} not allowed (use A-Z a-z 0-9 . _ ~ - and /)`;
      continue;
    }
    const seg = name.slice(start, i); // ASCII up to here
    if (seg === '') return 'topic: invalid: empty segment (leading, trailing or double /)';
    if (seg.length > maxSegmentLength) return `topic: invalid: segment longer than ${maxSegmentLength} bytes`;
    if (seg === '.' || seg === '..') return `topic: invalid: segment "${seg}" not allowed`;
    start = i + 1;
  }
  return null;
}

/** topic.ValidPattern's error message for p, or null. */
export function topicPatternError(p) {
  if (p === '*') return null;
  if (p.endsWith('/*')) return topicError(p.slice(0, -2));
  return topicError(p);
}

// --- job targets (internal/jobs parseTargets) ---

const labelRE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}=[A-Za-z0-9._:/-]{0,128}$/;

function truncateBytes(s, n) {
  const b = encoder.encode(s);
  return b.length > n ? b.subarray(0, n) : b;
}

function validAgentID(id) {
  return !id.includes('/') && topicError(id) === null;
}

/** parseTargets's error message for s, or null. */
export function targetsError(s) {
  s = s.trim();
  if (s === '') return 'targets is required: agent ids (c1,c2) or a label selector (role=client)';
  let ids = 0;
  let labels = 0;
  for (let item of s.split(',')) {
    item = item.trim();
    if (item === '') return 'targets has an empty item';
    if (item.includes('=')) {
      if (!labelRE.test(item)) return `targets: ${goQuote(truncateBytes(item, 64))} is not a label key=value`;
      labels++;
    } else {
      if (!validAgentID(item)) return `targets: ${goQuote(truncateBytes(item, 64))} is not an agent id`;
      ids++;
    }
  }
  if (ids > 0 && labels > 0) return 'targets is ambiguous: give agent ids or labels, not both';
  if (ids + labels > 1000) return 'targets: at most 1000 items';
  return null;
}

// --- revocations and tokens (internal/control) ---

export const maxRevocationValueLen = 256;
export const maxRevocationReasonLen = 1024;

/** checkValue's message for a value named name ("value", "bid"), or null. */
export function valueError(name, v) {
  if (v === '') return `${name} is required`;
  if (byteLength(v) > maxRevocationValueLen) return `${name} longer than ${maxRevocationValueLen} bytes`;
  if (/[\x00-\x1f\x7f]/.test(v)) return `${name} contains control characters`;
  return null;
}

/** The reason check of POST /api/v1/revocations, or null. */
export function reasonError(v) {
  if (byteLength(v) > maxRevocationReasonLen) return `reason longer than ${maxRevocationReasonLen} bytes`;
  return null;
}

const unitNanos = { ns: 1, us: 1e3, 'µs': 1e3, 'μs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/**
 * Reads a Go duration ("90m", "1h30m", "2.5h") as time.ParseDuration
 * does; returns seconds, or null if it is not one.
 */
export function parseGoDuration(s) {
  let rest = s;
  let neg = false;
  if (rest[0] === '-' || rest[0] === '+') {
    neg = rest[0] === '-';
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') return null;
  let total = 0;
  const re = /^([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)/;
  while (rest !== '') {
    const m = re.exec(rest);
    if (!m || m[1] === '' || m[1] === '.') return null;
    total += Number(m[1]) * unitNanos[m[2]];
    rest = rest.slice(m[0].length);
  }
  if (total > 2 ** 63 - 1) return null;
  return (neg ? -total : total) / 1e9;
}

/** The server's message for a "ttl" that is not a duration, or null. */
export function durationError(s) {
  if (parseGoDuration(s) === null) return `request body: duration ${goQuote(encoder.encode(s))}: want e.g. "90s" or "2h"`;
  return null;
}
