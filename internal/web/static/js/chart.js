// Line charts drawn as inline SVG: a time window, two series (in: solid
// line, out: dashed line, so they differ without colour), three grid
// lines with labels. Redrawn at the element's own pixel size, so text is
// never stretched.

const NS = 'http://www.w3.org/2000/svg';

function svgEl(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** The smallest of 1, 2, 5 × 10^n that is at least v. */
export function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) {
    if (m * p >= v) return m * p;
  }
  return 10 * p;
}

export class Chart {
  /**
   * svg: the <svg> element. format: value → label. windowMs: the time
   * shown, ending now. gapMs: points further apart are not joined.
   */
  constructor(svg, { format, windowMs, gapMs }) {
    this.svg = svg;
    this.format = format;
    this.windowMs = windowMs;
    this.gapMs = gapMs;
    this.series = [
      { cls: 'series series-in', points: [] },
      { cls: 'series series-out', points: [] },
    ];
    this.svg.removeAttribute('preserveAspectRatio');
    if (typeof ResizeObserver !== 'undefined') {
      let last = 0;
      new ResizeObserver(() => {
        const w = this.svg.clientWidth;
        if (w !== last) {
          last = w;
          this.draw();
        }
      }).observe(svg);
    }
  }

  /** Replaces series i with points [[timeMs, value], …], oldest first. */
  set(i, points) {
    this.series[i].points = points.slice();
  }

  /** Appends a point to series i. */
  add(i, t, v) {
    const pts = this.series[i].points;
    if (pts.length > 0 && t <= pts[pts.length - 1][0]) return;
    pts.push([t, v]);
  }

  draw(now = Date.now()) {
    const w = Math.max(200, this.svg.clientWidth || 600);
    const ht = Math.max(120, this.svg.clientHeight || 220);
    const padL = 64;
    const padR = 12;
    const padT = 10;
    const padB = 22;
    const t0 = now - this.windowMs;
    for (const s of this.series) { // forget what has left the window
      while (s.points.length > 2 && s.points[1][0] < t0) s.points.shift();
    }
    let max = 0;
    for (const s of this.series) {
      for (const [t, v] of s.points) if (t >= t0 && v > max) max = v;
    }
    const yMax = niceCeil(max);
    const x = (t) => padL + ((t - t0) / this.windowMs) * (w - padL - padR);
    const y = (v) => padT + (1 - v / yMax) * (ht - padT - padB);
    const nodes = [];
    for (const f of [0, 0.5, 1]) {
      const yy = y(yMax * f).toFixed(1);
      nodes.push(svgEl('line', { class: 'grid-line', x1: padL, x2: w - padR, y1: yy, y2: yy }));
      nodes.push(svgEl('text', { x: padL - 6, y: Number(yy) + 4, 'text-anchor': 'end' }, this.format(yMax * f)));
    }
    const mins = this.windowMs / 60000;
    for (const m of [mins, (mins * 2) / 3, mins / 3, 0]) {
      const xx = x(now - m * 60000);
      const anchor = m === mins ? 'start' : m === 0 ? 'end' : 'middle';
      nodes.push(svgEl('text', { x: xx.toFixed(1), y: ht - 6, 'text-anchor': anchor }, m === 0 ? 'now' : `−${Math.round(m)} min`));
    }
    for (const s of this.series) {
      let d = '';
      let prev = null;
      for (const [t, v] of s.points) {
        if (t < t0 - this.gapMs) {
          prev = null;
          continue;
        }
        const cmd = prev === null || t - prev > this.gapMs ? 'M' : 'L';
        d += `${cmd}${Math.max(padL, x(t)).toFixed(1)},${y(v).toFixed(1)}`;
        prev = t;
      }
      if (d) nodes.push(svgEl('path', { class: s.cls, d }));
    }
    this.svg.setAttribute('viewBox', `0 0 ${w} ${ht}`);
    this.svg.replaceChildren(...nodes);
  }

  /** The newest value of series i (0 if none). */
  last(i) {
    const pts = this.series[i].points;
    return pts.length ? pts[pts.length - 1][1] : 0;
  }
}
