// Action parameters, checked in the page exactly as the hub checks them
// (internal/jobproto: Param.Check and Action.CheckParams), with the same
// messages, e.g. "parameter count: above the maximum 100".
//
// Go details kept: lengths are UTF-8 bytes; integers are what
// strconv.ParseInt(v, 10, 64) reads, numbers what strconv.ParseFloat(v, 64)
// reads (underscores between digits, hexadecimal floats, no NaN or
// infinities); a value in a message is quoted as Go's %q quotes it, cut to
// 40 bytes; bounds are printed as strconv.FormatFloat(x, 'g', -1, 64)
// prints them. String patterns are RE2 expressions that the whole value
// must match; they are translated to JavaScript, and a pattern using RE2
// syntax with no JavaScript equivalent (flags other than a leading (?i),
// \C, negated POSIX classes…) is left to the server, which checks every
// value again anyway. As in Go, a string that starts with '-' or holds a
// control character (below 0x20 except tab, and 0x7f) is refused unless the
// declaration sets allow_dash or allow_control_chars, and an int or number
// starts with '-' only when min is below zero.
//
// This module has no DOM dependencies: internal/web's Go tests run it
// under Node, when Node is installed, against the Go implementation.

export const maxParamValueBytes = 4096;

const encoder = new TextEncoder();

/** The length of s in UTF-8 bytes. */
export function byteLength(s) {
  return encoder.encode(s).length;
}

/**
 * Checks value v of parameter p (a declaration as the agents API shows
 * it); returns null if valid, else the hub's message.
 */
export function checkParam(p, v) {
  const fail = (reason) => `parameter ${p.name}: ${reason}`;
  const bytes = encoder.encode(v);
  if (bytes.length > maxParamValueBytes) return fail(`longer than ${maxParamValueBytes} bytes`);
  switch (p.type) {
    case 'string': {
      const maxLen = p.max_length || 0;
      if (maxLen > 0 && bytes.length > maxLen) return fail(`longer than ${maxLen} bytes`);
      if (v.includes('\0')) return fail('contains a NUL byte');
      const ctl = controlChar(v);
      if (ctl >= 0 && !p.allow_control_chars) {
        return fail(`contains the control character U+${hex(ctl, 4).toUpperCase()} (the declaration does not set allow_control_chars)`);
      }
      if (v.startsWith('-') && !p.allow_dash) {
        return fail("starts with '-', which the program could read as an option (the declaration does not set allow_dash)");
      }
      if (p.pattern) {
        const re = compilePattern(p.pattern);
        if (re !== null && !wholeMatch(re, v)) return fail(`does not match ${p.pattern}`);
      }
      return null;
    }
    case 'int': {
      const n = parseGoInt(v);
      if (n === null) return fail(`${goQuote(short(bytes))} is not an integer`);
      return checkRange(p, v, n, fail);
    }
    case 'number': {
      const n = parseGoFloat(v);
      if (n === null || !Number.isFinite(n)) return fail(`${goQuote(short(bytes))} is not a number`);
      return checkRange(p, v, n, fail);
    }
    case 'bool':
      if (v !== 'true' && v !== 'false') return fail('want true or false');
      return null;
    case 'enum':
      if (!(p.values || []).includes(v)) return fail(`want one of ${(p.values || []).join(', ')}`);
      return null;
    default:
      return fail(`unknown type ${goQuote(encoder.encode(String(p.type)))}`);
  }
}

/** The hub's message for a required parameter that is not given. */
export function requiredMessage(p) {
  return `parameter ${p.name}: is required`;
}

// checkRange is jobproto's: bounds first, then a leading '-' (an option
// to many programs) only when min is below zero.
function checkRange(p, v, n, fail) {
  const hasMin = p.min !== undefined && p.min !== null;
  if (hasMin && n < p.min) return fail(`below the minimum ${formatG(p.min)}`);
  if (p.max !== undefined && p.max !== null && n > p.max) return fail(`above the maximum ${formatG(p.max)}`);
  if (v.startsWith('-') && !(hasMin && p.min < 0)) {
    return fail("starts with '-', which the program could read as an option (negative values need a min below 0)");
  }
  return null;
}

// controlChar is jobproto's: the code of the first control character a
// declaration must allow (below 0x20 except tab, and 0x7f), or -1.
function controlChar(v) {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return c;
  }
  return -1;
}

// wholeMatch reports whether re (anchored by compilePattern) matched all
// of v: checked on the match itself, so that no pattern text can widen
// what the anchors cover.
function wholeMatch(re, v) {
  const m = re.exec(v);
  return m !== null && m.index === 0 && m[0] === v;
}

// short is jobproto's short on UTF-8 bytes: the first 40 bytes and "…".
function short(bytes) {
  if (bytes.length <= 40) return bytes;
  const ell = encoder.encode('…');
  const out = new Uint8Array(40 + ell.length);
  out.set(bytes.subarray(0, 40));
  out.set(ell, 40);
  return out;
}

// ---------------------------------------------------------------------
// strconv.ParseInt(v, 10, 64)

const minInt64 = -(2n ** 63n);
const maxInt64 = 2n ** 63n - 1n;

/** The value of v as Go's ParseInt(v, 10, 64) reads it, as a float64; null if it fails. */
export function parseGoInt(v) {
  if (!/^[+-]?[0-9]+$/.test(v)) return null;
  const n = BigInt(v);
  if (n < minInt64 || n > maxInt64) return null;
  return Number(n); // float64(n): round to nearest, ties to even, as Go converts
}

// ---------------------------------------------------------------------
// strconv.ParseFloat(v, 64)

// underscoreOK is strconv's: underscores only between digits, or between
// a base prefix and a digit.
function underscoreOK(s) {
  let saw = '^';
  let i = 0;
  if (s.length >= 1 && (s[0] === '-' || s[0] === '+')) s = s.slice(1);
  let hex = false;
  if (s.length >= 2 && s[0] === '0' && 'bBoOxX'.includes(s[1])) {
    i = 2;
    saw = '0';
    hex = s[1] === 'x' || s[1] === 'X';
  }
  for (; i < s.length; i++) {
    const c = s[i];
    if ((c >= '0' && c <= '9') || (hex && /[a-fA-F]/.test(c))) {
      saw = '0';
      continue;
    }
    if (c === '_') {
      if (saw !== '0') return false;
      saw = '_';
      continue;
    }
    if (saw === '_') return false;
    saw = '!';
  }
  return saw !== '_';
}

const decimalFloat = /^[+-]?(?:[0-9_]+(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][+-]?[0-9][0-9_]*)?$/;
const hexFloat = /^([+-]?)0[xX]((?:[0-9a-fA-F_]+(?:\.[0-9a-fA-F_]*)?|\.[0-9a-fA-F_]+))[pP]([+-]?[0-9][0-9_]*)$/;

/**
 * The value of v as Go's ParseFloat(v, 64) reads it; null if it fails.
 * Infinities and NaN (which Check refuses anyway) come back as such.
 */
export function parseGoFloat(v) {
  if (/^[+-]?(inf|infinity)$/i.test(v)) return v[0] === '-' ? -Infinity : Infinity;
  if (/^nan$/i.test(v)) return NaN;
  if (v.includes('_') && !underscoreOK(v)) return null;
  if (decimalFloat.test(v)) {
    if (!/[0-9]/.test(v.replace(/[eE].*$/, ''))) return null;
    return Number(v.replaceAll('_', ''));
  }
  const m = hexFloat.exec(v);
  if (m) {
    const mant = m[2].replaceAll('_', '');
    const [intPart, fracPart = ''] = mant.split('.');
    const digits = intPart + fracPart;
    if (!/[0-9a-fA-F]/.test(digits)) return null;
    const n = Number(BigInt('0x' + (digits || '0')));
    const exp = Number(m[3].replaceAll('_', '')) - 4 * fracPart.length;
    let x = n * 2 ** exp;
    if (!Number.isFinite(x) && n !== 0) return null; // out of range: ParseFloat fails
    if (Number.isNaN(x)) x = 0;
    return m[1] === '-' ? -x : x;
  }
  return null;
}

// ---------------------------------------------------------------------
// strconv.FormatFloat(x, 'g', -1, 64)

/** x as Go's FormatFloat(x, 'g', -1, 64) shows it: 100, 1e+06, 0.5, 1.5e-05. */
export function formatG(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return '+Inf';
  if (x === -Infinity) return '-Inf';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  const neg = x < 0;
  const [mant, e] = Math.abs(x).toExponential().split('e'); // shortest digits that read back as x
  const digits = mant.replace('.', '');
  const exp = Number(e);
  let s;
  if (exp < -4 || exp >= 6) { // %e: Go uses at least two exponent digits
    const ae = Math.abs(exp);
    s = digits[0] + (digits.length > 1 ? '.' + digits.slice(1) : '') + 'e' + (exp < 0 ? '-' : '+') + (ae < 10 ? '0' : '') + ae;
  } else { // %f with the shortest digits
    const dp = exp + 1;
    if (dp <= 0) s = '0.' + '0'.repeat(-dp) + digits;
    else if (dp >= digits.length) s = digits + '0'.repeat(dp - digits.length);
    else s = digits.slice(0, dp) + '.' + digits.slice(dp);
  }
  return (neg ? '-' : '') + s;
}

// ---------------------------------------------------------------------
// Go's %q (strconv.Quote) of a byte string

const printable = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;
const hex = (n, w) => n.toString(16).padStart(w, '0');

// decodeRune reads one UTF-8 sequence at i: [codePoint, width], or
// [-1, 1] for an invalid byte (as utf8.DecodeRune's RuneError, 1).
function decodeRune(b, i) {
  const b0 = b[i];
  if (b0 < 0x80) return [b0, 1];
  let need;
  let lo = 0x80;
  let hi = 0xbf;
  if (b0 >= 0xc2 && b0 <= 0xdf) need = 1;
  else if (b0 >= 0xe0 && b0 <= 0xef) {
    need = 2;
    if (b0 === 0xe0) lo = 0xa0;
    if (b0 === 0xed) hi = 0x9f;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    need = 3;
    if (b0 === 0xf0) lo = 0x90;
    if (b0 === 0xf4) hi = 0x8f;
  } else return [-1, 1];
  let cp = b0 & (need === 1 ? 0x1f : need === 2 ? 0x0f : 0x07);
  for (let k = 1; k <= need; k++) {
    const c = b[i + k];
    const l = k === 1 ? lo : 0x80;
    const u = k === 1 ? hi : 0xbf;
    if (c === undefined || c < l || c > u) return [-1, 1];
    cp = (cp << 6) | (c & 0x3f);
  }
  return [cp, need + 1];
}

/** bytes quoted as Go's strconv.Quote quotes a string. */
export function goQuote(bytes) {
  let out = '"';
  for (let i = 0; i < bytes.length;) {
    const [r, w] = decodeRune(bytes, i);
    if (r < 0) {
      out += '\\x' + hex(bytes[i], 2);
      i += 1;
      continue;
    }
    i += w;
    const ch = String.fromCodePoint(r);
    if (r === 0x22 || r === 0x5c) {
      out += '\\' + ch;
    } else if (r === 0x20 || printable.test(ch)) {
      out += ch;
    } else {
      const named = { 7: '\\a', 8: '\\b', 12: '\\f', 10: '\\n', 13: '\\r', 9: '\\t', 11: '\\v' }[r];
      if (named) out += named;
      else if (r < 0x20 || r === 0x7f) out += '\\x' + hex(r, 2);
      else if (r < 0x10000) out += '\\u' + hex(r, 4);
      else out += '\\U' + hex(r, 8);
    }
  }
  return out + '"';
}

// ---------------------------------------------------------------------
// RE2 patterns

const patternCache = new Map();

/**
 * Compiles an RE2 pattern into a JavaScript RegExp matching whole values,
 * or returns null when it cannot be translated faithfully.
 */
export function compilePattern(pattern) {
  if (patternCache.has(pattern)) return patternCache.get(pattern);
  let re = null;
  const t = translateRE2(pattern);
  if (t !== null) {
    try {
      re = new RegExp('^(?:' + t.source + ')$', t.flags);
    } catch {
      re = null;
    }
  }
  patternCache.set(pattern, re);
  return re;
}

const posixClasses = {
  alnum: '0-9A-Za-z', alpha: 'A-Za-z', ascii: '\\x00-\\x7f', blank: '\\t ', cntrl: '\\x00-\\x1f\\x7f',
  digit: '0-9', graph: '\\x21-\\x7e', lower: 'a-z', print: '\\x20-\\x7e',
  punct: '\\x21-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7e', space: '\\t\\n\\v\\f\\r ', upper: 'A-Z',
  word: '0-9A-Za-z_', xdigit: '0-9A-Fa-f',
};

const generalCategories = new Set(['C', 'Cc', 'Cf', 'Co', 'Cs', 'L', 'Ll', 'Lm', 'Lo', 'Lt', 'Lu', 'M', 'Mc', 'Me', 'Mn',
  'N', 'Nd', 'Nl', 'No', 'P', 'Pc', 'Pd', 'Pe', 'Pf', 'Pi', 'Po', 'Ps', 'S', 'Sc', 'Sk', 'Sm', 'So', 'Z', 'Zl', 'Zp', 'Zs']);

const hexByte = (ch) => '\\x' + hex(ch.charCodeAt(0), 2);

// escapeLiteral writes one character to match literally.
function escapeLiteral(ch) {
  const cp = ch.codePointAt(0);
  if (/[0-9A-Za-z]/.test(ch) || cp > 0x7f) return ch;
  if (cp < 0x20 || cp === 0x7f || /[!-/:-@[-`{-~ ]/.test(ch)) return hexByte(ch);
  return ch;
}

/** Translates RE2 syntax to a JavaScript (u-mode) source: {source, flags} or null. */
export function translateRE2(pat) {
  let out = '';
  let flags = 'u';
  let i = 0;
  if (pat.startsWith('(?i)')) {
    flags += 'i';
    i = 4;
  }
  let inClass = false;
  let classStart = false; // just after [ or [^: a ] here is literal
  const chars = [...pat];
  // Work on code points so astral characters stay whole.
  const at = (k) => chars[k];
  i = [...pat.slice(0, i)].length;
  while (i < chars.length) {
    const c = at(i);
    if (c === '\\') {
      const n = at(i + 1);
      if (n === undefined) return null;
      if (n === 'Q') {
        let j = i + 2;
        let lit = '';
        while (j < chars.length && !(at(j) === '\\' && at(j + 1) === 'E')) lit += at(j++);
        out += [...lit].map(escapeLiteral).join('');
        i = j < chars.length ? j + 2 : j;
        classStart = false;
        continue;
      }
      if (n === 's') {
        out += inClass ? '\\t\\n\\f\\r ' : '[\\t\\n\\f\\r ]';
      } else if (n === 'S') {
        if (inClass) return null;
        out += '[^\\t\\n\\f\\r ]';
      } else if ('dDwW'.includes(n)) {
        out += '\\' + n;
      } else if (n === 'b' || n === 'B') {
        if (inClass) return null;
        out += '\\' + n;
      } else if (n === 'A') {
        if (inClass) return null;
        out += '^';
      } else if (n === 'z') {
        if (inClass) return null;
        out += '$';
      } else if (n === 'p' || n === 'P') {
        let name;
        let j;
        if (at(i + 2) === '{') {
          j = i + 3;
          name = '';
          while (j < chars.length && at(j) !== '}') name += at(j++);
          if (j >= chars.length) return null;
          j++;
        } else {
          name = at(i + 2);
          if (name === undefined) return null;
          j = i + 3;
        }
        let neg = n === 'P';
        if (name.startsWith('^')) {
          neg = !neg;
          name = name.slice(1);
        }
        if (name === 'Any') {
          out += neg ? '[^\\s\\S]' : '[\\s\\S]';
          if (inClass) return null;
        } else {
          out += (neg ? '\\P{' : '\\p{') + (generalCategories.has(name) ? name : 'Script=' + name) + '}';
        }
        i = j;
        classStart = false;
        continue;
      } else if (n === 'x') {
        if (at(i + 2) === '{') {
          let j = i + 3;
          let hx = '';
          while (j < chars.length && at(j) !== '}') hx += at(j++);
          if (!/^[0-9a-fA-F]{1,6}$/.test(hx)) return null;
          out += '\\u{' + hx + '}';
          i = j + 1;
          classStart = false;
          continue;
        }
        const hx = (at(i + 2) || '') + (at(i + 3) || '');
        if (!/^[0-9a-fA-F]{2}$/.test(hx)) return null;
        out += '\\x' + hx;
        i += 4;
        classStart = false;
        continue;
      } else if ('fnrtv'.includes(n)) {
        out += '\\' + n;
      } else if (n === 'a') {
        out += '\\x07';
      } else if (/[!-/:-@[-`{-~]/.test(n)) {
        out += hexByte(n);
      } else {
        return null; // octal, \C, \Z… : leave it to the server
      }
      i += 2;
      classStart = false;
      continue;
    }
    if (inClass) {
      if (c === '[' && at(i + 1) === ':') {
        let j = i + 2;
        let name = '';
        while (j < chars.length && !(at(j) === ':' && at(j + 1) === ']')) name += at(j++);
        if (j >= chars.length || name.startsWith('^') || !(name in posixClasses)) return null;
        out += posixClasses[name];
        i = j + 2;
        classStart = false;
        continue;
      }
      if (c === ']' && !classStart) {
        inClass = false;
        out += ']';
      } else if (c === ']' || c === '[' || c === '/') {
        out += '\\' + c;
      } else {
        out += c;
      }
      classStart = false;
      i++;
      continue;
    }
    switch (c) {
      case '[':
        inClass = true;
        out += '[';
        if (at(i + 1) === '^') {
          out += '^';
          i++;
        }
        classStart = true;
        i++;
        continue;
      case '(':
        if (at(i + 1) === '?') {
          if (at(i + 2) === ':') {
            out += '(?:';
            i += 3;
          } else if (at(i + 2) === 'P' && at(i + 3) === '<') {
            out += '(?<';
            i += 4;
          } else if (at(i + 2) === '<' && at(i + 3) !== '=' && at(i + 3) !== '!') {
            out += '(?<';
            i += 3;
          } else {
            return null; // flags: (?s), (?m), (?U), (?i) other than leading
          }
          continue;
        }
        out += '(';
        break;
      case '.':
        out += '[^\\n]';
        break;
      case '{': {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(chars.slice(i, i + 24).join(''));
        if (m && out !== '' && !/[(|]$/.test(out)) {
          out += m[0];
          i += m[0].length;
          continue;
        }
        out += '\\{';
        break;
      }
      case '}':
        out += '\\}';
        break;
      case ']':
        out += '\\]';
        break;
      case '/':
        out += '\\/';
        break;
      default:
        out += c;
    }
    i++;
  }
  if (inClass) return null;
  return { source: out, flags };
}
