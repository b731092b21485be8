// Charts drawn with uPlot from same-origin JSON.
//
// Contract with the templates: an element `<div data-chart="series|agp|daily" data-src="URL">`
// (optionally `data-height="300"`, in CSS pixels) is dedicated to its chart: its children are
// replaced. While the JSON loads the element has `data-state="loading"`; then
//   - `data-state="drawn"` and `data-points="N"`: a canvas is drawn; N counts the plotted
//     values (non-null readings; non-empty AGP time-of-day bins; non-null daily means over
//     every patient);
//   - `data-state="empty"`, `data-points="0"`: the JSON holds nothing to plot, a message says so;
//   - `data-state="error"`: the request or the JSON failed, a message (`.chart-message`) says
//     why and `data-error` holds it too.
// A series chart whose JSON has `alerts` also gets `data-alerts="M"` (the valid alerts marked).
// A drawn chart fires a bubbling `chart-drawn` event (detail: { points }).
// Charts are drawn on load and again after htmx swaps, for new elements and for elements
// whose `data-src` changed; charts whose element left the page are destroyed.

import uPlot from 'uplot';
import { api, isSameOrigin } from './api.js';
import { convert, currentUnit, formatValue } from './units.js';
import { formatLocal } from './times.js';

const DEFAULT_HEIGHT = 300;
const MINUTES_PER_DAY = 24 * 60;

/** Live charts by element: `{ src, seq, plot, observer }`. A Map so removed ones can be swept. */
const charts = new Map();
let sequence = 0;

/** Colours come from CSS custom properties on the chart element, so app.css owns the palette. */
function cssColour(el, name, fallback) {
  const v = getComputedStyle(el).getPropertyValue(name).trim();
  return v || fallback;
}

/** Colour-blind-safe palette (Okabe and Ito) for one line per patient. */
const PATIENT_COLOURS = ['#0072b2', '#d55e00', '#009e73', '#cc79a7', '#e69f00', '#56b4e9', '#000000', '#f0e442'];

function numberOrNull(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function countValues(values) {
  let n = 0;
  for (const v of values) if (v !== null) n++;
  return n;
}

/** An array field of the JSON, checked for the expected length. */
function field(json, name, length, { optional = false } = {}) {
  const v = json[name];
  if (v === undefined || v === null) {
    if (optional) return new Array(length).fill(null);
    throw new Error(`the data has no "${name}"`);
  }
  if (!Array.isArray(v)) throw new Error(`"${name}" is not a list`);
  if (length !== undefined && v.length !== length) {
    throw new Error(`"${name}" has ${v.length} values for ${length} points`);
  }
  return v;
}

function glucoseAxisLabel(unit) {
  return `Glucose (${unit})`;
}

/** y range covering the data and the target band, with a little air, never below zero. */
function glucoseRange(low, high) {
  return (_u, min, max) => {
    const lo = Math.min(min ?? low, low);
    const hi = Math.max(max ?? high, high);
    const pad = (hi - lo) * 0.05;
    return [Math.max(0, lo - pad), hi + pad];
  };
}

/** Shades the target range [low, high] (already in the display unit) under everything else. */
function targetBandHook(low, high, fill) {
  return (u) => {
    if (low === null || high === null) return;
    const { left, top, width, height } = u.bbox;
    const yHigh = Math.max(top, u.valToPos(high, 'y', true));
    const yLow = Math.min(top + height, u.valToPos(low, 'y', true));
    if (yLow <= yHigh) return;
    u.ctx.save();
    u.ctx.fillStyle = fill;
    u.ctx.fillRect(left, yHigh, width, yLow - yHigh);
    u.ctx.restore();
  };
}

function glucoseLegendValue(unit) {
  return (_u, v) => formatValue(v, unit);
}

// ---- series: readings, 2-day moving average, target band, optional alert markers ----

const MARKER_KINDS = {
  added: { label: 'added by the candidate', colour: '--chart-alert-added', fallback: '#d55e00' },
  removed: { label: 'removed by the candidate', colour: '--chart-alert-removed', fallback: '#0072b2' },
  both: { label: 'raised by both versions', colour: '--chart-alert-both', fallback: '#6f4e9c' },
};

/** Checks that times are numbers in ascending order, as uPlot needs its x values. */
function ascendingTimes(t, name) {
  for (let i = 0; i < t.length; i++) {
    if (typeof t[i] !== 'number' || !Number.isFinite(t[i])) throw new Error(`"${name}" holds a non-number`);
    if (i > 0 && t[i] < t[i - 1]) throw new Error(`"${name}" is not in ascending order`);
  }
  return t;
}

function buildSeries(el, json, unit) {
  const t = ascendingTimes(field(json, 't'), 't');
  const n = t.length;
  const readings = field(json, 'mg_dl', n).map((v) => convert(numberOrNull(v), unit));
  const average = field(json, 'ma_2d', n, { optional: true }).map((v) => convert(numberOrNull(v), unit));
  const x = t.map((ms) => ms / 1000);
  const low = convert(numberOrNull(json.target_low) ?? 70, unit);
  const high = convert(numberOrNull(json.target_high) ?? 180, unit);

  const alerts = (Array.isArray(json.alerts) ? json.alerts : [])
    .filter((a) => a && Number.isFinite(a.t))
    .map((a) => ({ t: a.t / 1000, label: String(a.label ?? ''), kind: MARKER_KINDS[a.kind] ? a.kind : 'both' }));
  const markerColours = Object.fromEntries(
    Object.entries(MARKER_KINDS).map(([k, m]) => [k, cssColour(el, m.colour, m.fallback)]),
  );

  const opts = {
    series: [
      { label: 'Time', value: (_u, v) => (v === null ? '–' : formatLocal(v * 1000)) },
      {
        label: 'Glucose',
        stroke: cssColour(el, '--chart-reading', '#0072b2'),
        width: 1.25,
        value: glucoseLegendValue(unit),
      },
      {
        label: '2-day average',
        stroke: cssColour(el, '--chart-average', '#d55e00'),
        width: 2,
        points: { show: false },
        value: glucoseLegendValue(unit),
      },
    ],
    scales: { y: { range: glucoseRange(low, high) } },
    axes: [{}, { label: glucoseAxisLabel(unit) }],
    hooks: {
      drawClear: [targetBandHook(low, high, cssColour(el, '--chart-target', 'rgba(0, 158, 115, 0.14)'))],
      draw: alerts.length ? [(u) => drawMarkers(u, alerts, markerColours)] : [],
      setCursor: alerts.length ? [(u) => showMarkerTip(u, alerts)] : [],
    },
  };
  return {
    opts,
    data: [x, readings, average],
    points: countValues(readings),
    after: () => {
      if (!json.alerts) return;
      el.dataset.alerts = String(alerts.length);
      el.appendChild(markerLegend(alerts, markerColours));
    },
    describe: `Glucose readings and 2-day average in ${unit}`,
  };
}

/** Alert markers: a vertical line through the plot and a triangle on top, by kind. */
function drawMarkers(u, alerts, colours) {
  const { left, top, width, height } = u.bbox;
  const ctx = u.ctx;
  const size = 5 * uPlot.pxRatio;
  ctx.save();
  ctx.lineWidth = uPlot.pxRatio;
  for (const a of alerts) {
    const x = Math.round(u.valToPos(a.t, 'x', true));
    if (x < left || x > left + width) continue;
    ctx.strokeStyle = colours[a.kind];
    ctx.fillStyle = colours[a.kind];
    ctx.setLineDash(a.kind === 'removed' ? [4 * uPlot.pxRatio, 3 * uPlot.pxRatio] : []);
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, top + height);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.beginPath();
    ctx.moveTo(x - size, top);
    ctx.lineTo(x + size, top);
    ctx.lineTo(x, top + size * 1.6);
    ctx.closePath();
    ctx.fill();
  }
  ctx.restore();
}

/** Under the cursor, names the alerts whose marker is within a few pixels. */
function showMarkerTip(u, alerts) {
  let tip = u.over.querySelector('.chart-tip');
  if (!tip) {
    tip = document.createElement('div');
    tip.className = 'chart-tip';
    u.over.appendChild(tip);
  }
  const left = u.cursor.left;
  const near = left >= 0 ? alerts.filter((a) => Math.abs(u.valToPos(a.t, 'x') - left) <= 4) : [];
  if (near.length === 0) {
    tip.hidden = true;
    return;
  }
  tip.textContent = near
    .map((a) => `${a.label || 'alert'} (${MARKER_KINDS[a.kind].label}, ${formatLocal(a.t * 1000)})`)
    .join('\n');
  tip.hidden = false;
  tip.style.left = `${Math.min(left + 8, Math.max(0, u.over.clientWidth - 220))}px`;
}

function markerLegend(alerts, colours) {
  const list = document.createElement('ul');
  list.className = 'chart-markers';
  for (const [kind, m] of Object.entries(MARKER_KINDS)) {
    const count = alerts.filter((a) => a.kind === kind).length;
    if (count === 0) continue;
    const item = document.createElement('li');
    item.dataset.kind = kind;
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.backgroundColor = colours[kind];
    item.append(swatch, `${count} ${count === 1 ? 'alert' : 'alerts'} ${m.label}`);
    list.appendChild(item);
  }
  return list;
}

// ---- agp: 5/25/50/75/95 percentiles by time of day ----

function clock(minute) {
  const m = ((Math.round(minute) % MINUTES_PER_DAY) + MINUTES_PER_DAY) % MINUTES_PER_DAY;
  return `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
}

function buildAgp(el, json, unit) {
  const minute = ascendingTimes(field(json, 'minute'), 'minute');
  const n = minute.length;
  const count = field(json, 'count', n, { optional: true });
  // A bin without readings is a gap, whatever its percentiles say.
  const pct = (name) =>
    field(json, name, n).map((v, i) => (count[i] === 0 ? null : convert(numberOrNull(v), unit)));
  const [p5, p25, p50, p75, p95] = ['p5', 'p25', 'p50', 'p75', 'p95'].map(pct);
  const low = convert(numberOrNull(json.target_low) ?? 70, unit);
  const high = convert(numberOrNull(json.target_high) ?? 180, unit);
  const outer = cssColour(el, '--chart-band-outer', 'rgba(0, 114, 178, 0.15)');
  const inner = cssColour(el, '--chart-band-inner', 'rgba(0, 114, 178, 0.35)');
  const edge = cssColour(el, '--chart-band-edge', 'rgba(0, 114, 178, 0.6)');
  const value = glucoseLegendValue(unit);
  const opts = {
    series: [
      { label: 'Time of day', value: (_u, v) => (v === null ? '–' : clock(v)) },
      { label: '5th', stroke: edge, width: 1, dash: [3, 3], points: { show: false }, value },
      { label: '25th', stroke: edge, width: 1, points: { show: false }, value },
      { label: 'Median', stroke: cssColour(el, '--chart-median', '#0b3c5d'), width: 2.5, points: { show: false }, value },
      { label: '75th', stroke: edge, width: 1, points: { show: false }, value },
      { label: '95th', stroke: edge, width: 1, dash: [3, 3], points: { show: false }, value },
    ],
    bands: [
      { series: [5, 1], fill: outer },
      { series: [4, 2], fill: inner },
    ],
    scales: {
      x: { time: false, range: [0, MINUTES_PER_DAY] },
      y: { range: glucoseRange(low, high) },
    },
    axes: [
      {
        label: 'Time of day',
        splits: () => Array.from({ length: 9 }, (_, i) => i * 180),
        values: (_u, splits) => splits.map(clock),
      },
      { label: glucoseAxisLabel(unit) },
    ],
    hooks: {
      drawClear: [targetBandHook(low, high, cssColour(el, '--chart-target', 'rgba(0, 158, 115, 0.14)'))],
    },
  };
  return {
    opts,
    data: [minute, p5, p25, p50, p75, p95],
    points: countValues(p50),
    describe: `Ambulatory glucose profile: median with 25–75 and 5–95 percentile bands by time of day, in ${unit}`,
  };
}

// ---- daily: one line of daily means per patient ----

/** Checks a calendar day `YYYY-MM-DD` and formats it in the viewer's locale (no zone shift). */
function dayLabel(day, style = 'date') {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(day));
  if (!m) throw new Error(`"${day}" is not a day (YYYY-MM-DD)`);
  // Local midnight of that date, so the label is the date itself whatever the zone.
  return formatLocal(new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3])).getTime(), style);
}

function buildDaily(el, json, unit) {
  const days = field(json, 'days');
  const n = days.length;
  const labels = days.map((d) => dayLabel(d));
  const patients = field(json, 'series');
  const lines = patients.map((p, i) => ({
    label: String(p.label ?? `Patient ${p.patient_id ?? i + 1}`),
    values: field(p, 'mean', n).map((v) => convert(numberOrNull(v), unit)),
  }));
  const value = glucoseLegendValue(unit);
  // The x values are day indices: the axis then has one tick per day (or per few days),
  // never hours, and a day label is the date the server named, not a converted instant.
  const dayAt = (i) => (Number.isInteger(i) && i >= 0 && i < n ? labels[i] : '');
  const opts = {
    series: [
      { label: 'Day', value: (_u, v) => (v === null ? '–' : dayAt(v)) },
      ...lines.map((line, i) => ({
        label: line.label,
        stroke: PATIENT_COLOURS[i % PATIENT_COLOURS.length],
        width: 2,
        points: { show: true, size: 5 },
        value,
      })),
    ],
    scales: { x: { time: false, range: [-0.5, Math.max(0.5, n - 0.5)] } },
    axes: [
      {
        label: 'Day',
        incrs: [1, 2, 7, 14, 28, 56, 91, 182, 364],
        values: (_u, splits) => splits.map(dayAt),
      },
      { label: `Daily mean (${unit})` },
    ],
  };
  return {
    opts,
    data: [days.map((_, i) => i), ...lines.map((l) => l.values)],
    points: lines.reduce((sum, l) => sum + countValues(l.values), 0),
    describe: `Daily mean glucose of ${lines.length} ${lines.length === 1 ? 'patient' : 'patients'} in ${unit}`,
  };
}

const KINDS = { series: buildSeries, agp: buildAgp, daily: buildDaily };

// ---- drawing and lifecycle ----

function message(el, state, text) {
  const p = document.createElement('p');
  p.className = `chart-message ${state}`;
  if (state === 'error') p.setAttribute('role', 'alert');
  p.textContent = text;
  el.replaceChildren(p);
}

function destroy(el) {
  const c = charts.get(el);
  if (!c) return;
  if (c.observer) c.observer.disconnect();
  if (c.plot) c.plot.destroy();
  charts.delete(el);
}

function chartWidth(el) {
  return Math.max(200, Math.floor(el.clientWidth || 600));
}

async function draw(el, src) {
  destroy(el);
  const seq = ++sequence;
  charts.set(el, { src, seq });
  const current = () => charts.get(el)?.seq === seq && el.isConnected;
  const build = KINDS[el.dataset.chart];
  delete el.dataset.points;
  delete el.dataset.alerts;
  delete el.dataset.error;
  const fail = (reason) => {
    el.dataset.state = 'error';
    el.dataset.error = reason;
    el.removeAttribute('aria-busy');
    message(el, 'error', `This chart could not be drawn: ${reason}.`);
  };
  if (!build) return fail(`unknown chart kind "${el.dataset.chart}"`);
  if (!src) return fail('no data-src');
  if (!isSameOrigin(src)) return fail('its data is on another origin');

  el.dataset.state = 'loading';
  el.setAttribute('aria-busy', 'true');
  let answer;
  try {
    answer = await api('GET', src);
  } catch (e) {
    if (current()) fail(e.message);
    return;
  }
  if (!current()) return; // replaced or removed while loading
  if (!answer.ok) {
    const detail = answer.data && answer.data.error ? `: ${answer.data.error}` : '';
    return fail(`the host answered ${answer.status}${detail}`);
  }
  if (!answer.data || typeof answer.data !== 'object') return fail('the answer is not JSON');
  // Markers the page adds to the data (a backtest's added and removed alerts).
  if (el.dataset.markers) {
    try {
      answer.data.alerts = JSON.parse(el.dataset.markers);
    } catch {
      return fail('its markers are not JSON');
    }
  }

  const unit = currentUnit();
  let chart;
  try {
    chart = build(el, answer.data, unit);
  } catch (e) {
    return fail(`unexpected data (${e.message})`);
  }
  el.removeAttribute('aria-busy');
  if (chart.points === 0) {
    el.dataset.points = '0';
    el.dataset.state = 'empty';
    message(el, 'empty', 'No data for this period.');
    return;
  }

  el.replaceChildren();
  const height = Number(el.dataset.height) > 0 ? Number(el.dataset.height) : DEFAULT_HEIGHT;
  const plot = new uPlot({ ...chart.opts, width: chartWidth(el), height }, chart.data, el);
  plot.ctx.canvas.setAttribute('role', 'img');
  plot.ctx.canvas.setAttribute('aria-label', `${chart.describe}: ${chart.points} points`);
  if (chart.after) chart.after();
  // Follow the element's width (window resizes, a collapsing sidebar, a tablet turned).
  const observer = new ResizeObserver(() => {
    const width = chartWidth(el);
    if (width !== plot.width) plot.setSize({ width, height });
  });
  observer.observe(el);
  charts.set(el, { src, seq, plot, observer });
  el.dataset.points = String(chart.points);
  el.dataset.state = 'drawn';
  el.dispatchEvent(new CustomEvent('chart-drawn', { bubbles: true, detail: { points: chart.points } }));
}

/** Destroys the charts whose element is no longer in the page. */
function sweep() {
  for (const el of [...charts.keys()]) if (!el.isConnected) destroy(el);
}

/** Draws every chart under `root` that is new or whose `data-src` changed. */
export function drawCharts(root = document) {
  sweep();
  for (const el of root.querySelectorAll('[data-chart]')) {
    // `{utc_offset_min}` in a source stands for the viewer's offset from UTC, in minutes.
    const src = (el.getAttribute('data-src') || '').replace(
      '{utc_offset_min}',
      String(-new Date().getTimezoneOffset()),
    );
    const known = charts.get(el);
    if (known && known.src === src) continue;
    draw(el, src);
  }
}

/** The uPlot instance of a chart element, for scripts and browser tests. */
export function chartOf(el) {
  return charts.get(el)?.plot ?? null;
}

