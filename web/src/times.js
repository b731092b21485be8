// Times in the viewer's time zone. The server renders instants as
// `<time datetime="2026-11-02T08:15:00Z" data-local>` (RFC 3339 or epoch milliseconds) with a
// UTC text the script replaces; ages as `[data-since-ms="<epoch ms>"]`, kept current.

const FORMATS = {
  datetime: { dateStyle: 'medium', timeStyle: 'short' },
  date: { dateStyle: 'medium' },
  time: { timeStyle: 'short' },
  seconds: { dateStyle: 'medium', timeStyle: 'medium' },
};
const formatters = new Map();

function formatter(style) {
  const key = Object.hasOwn(FORMATS, style) ? style : 'datetime';
  if (!formatters.has(key)) formatters.set(key, new Intl.DateTimeFormat(undefined, FORMATS[key]));
  return formatters.get(key);
}

/** Epoch milliseconds from an attribute: digits are epoch ms, anything else an ISO string. */
export function parseInstant(value) {
  if (value === null || value === undefined) return NaN;
  const s = String(value).trim();
  if (/^-?\d+$/.test(s)) return Number(s);
  return s === '' ? NaN : Date.parse(s);
}

/**
 * Formats an instant in the viewer's zone. `style` is `datetime` (default), `date`, `time`
 * or `seconds`.
 */
export function formatLocal(ms, style = 'datetime') {
  return formatter(style).format(new Date(ms));
}

/**
 * Sets the text of every `<time datetime data-local>` under `root`. `data-local` may name a
 * style (`date`, `time`, `seconds`); empty means date and time. The exact UTC instant stays
 * in the `title`.
 */
export function applyLocalTimes(root = document) {
  for (const el of root.querySelectorAll('time[data-local]')) {
    const ms = parseInstant(el.getAttribute('datetime'));
    if (!Number.isFinite(ms)) continue;
    el.textContent = formatLocal(ms, el.getAttribute('data-local') || 'datetime');
    if (!el.hasAttribute('title')) el.setAttribute('title', new Date(ms).toISOString());
  }
}

/** "just now", "42 s ago", "3 min ago", "5 h ago", "2 d ago" for an age in milliseconds. */
export function formatAge(ageMs) {
  const s = Math.floor(ageMs / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min ago`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** Refreshes every `[data-since-ms]` under `root` against the current clock. */
export function applyAges(root = document, now = Date.now()) {
  for (const el of root.querySelectorAll('[data-since-ms]')) {
    const ms = parseInstant(el.getAttribute('data-since-ms'));
    if (!Number.isFinite(ms)) continue;
    // A reading stamped slightly ahead of this clock (skew) reads as "just now".
    el.textContent = formatAge(Math.max(0, now - ms));
    if (!el.hasAttribute('title')) el.setAttribute('title', formatLocal(ms, 'seconds'));
  }
}

/** How often ages are refreshed without a reload. */
export const AGE_REFRESH_MS = 15_000;

let ageTimer = null;

/** Starts the page-wide refresh of ages (once). */
export function startAgeTimer() {
  if (ageTimer === null) ageTimer = window.setInterval(() => applyAges(document), AGE_REFRESH_MS);
}
