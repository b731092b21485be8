// The live alert feed: `<tbody id="live-alerts" data-sse="/api/alerts/live">`.
//
// `GET /api/alerts/live` (host/src/admin/api.rs, `live_alerts`) streams server-sent events:
//   - `event: alert`, `id: <alert id>`, `data: <model::Alert as JSON>`:
//     { id, rule: { name, version }, reading_id, patient_id (number | null), device_id, kind,
//       at_ms, code, severity ("info" | "warning" | "critical"), message, value }
//   - `event: lagged`, `data: <number of alerts this subscriber missed>`.
// Each alert becomes a row on top of the table, cells in this order: patient, rule, code,
// severity, time, action (a link to /web/alerts/{id} to acknowledge it); every cell carries
// `data-col`. The tbody then has `data-count` (alerts received since the page loaded, each id
// once) and `data-sse-state` (`connecting`, `open`, `retrying`, `closed`); a browser test waits
// for `open` before it streams readings. A row with `data-empty` (the "no alerts yet"
// placeholder) is removed with the first alert. `data-lagged` counts alerts the host skipped.
// An `alert-received` event (detail: the alert) bubbles from the tbody for each new row.
// The table keeps at most `data-max-rows` rows (default 200), dropping the oldest.

import { isSameOrigin } from './api.js';
import { formatLocal } from './times.js';

const DEFAULT_MAX_ROWS = 200;

/** Open feeds by tbody, so a feed whose table left the page (an htmx swap) is closed. */
const feeds = new Map();

function cell(col, content) {
  const td = document.createElement('td');
  td.dataset.col = col;
  if (content instanceof Node) td.appendChild(content);
  else td.textContent = content;
  return td;
}

/** One table row for one alert; every value goes in as text, never as markup. */
export function alertRow(alert) {
  const tr = document.createElement('tr');
  tr.dataset.alertId = alert.id;
  tr.dataset.severity = alert.severity;
  tr.className = 'live-new';

  const patient = alert.patient_id === null || alert.patient_id === undefined ? '–' : String(alert.patient_id);
  const rule = alert.rule ? `${alert.rule.name}@${alert.rule.version}` : '';

  const severity = document.createElement('span');
  severity.className = `badge sev-${alert.severity}`;
  severity.textContent = alert.severity;

  const time = document.createElement('time');
  time.dateTime = new Date(alert.at_ms).toISOString();
  time.setAttribute('data-local', '');
  time.textContent = formatLocal(alert.at_ms);
  time.title = time.dateTime;

  const ack = document.createElement('a');
  ack.href = `/web/alerts/${encodeURIComponent(alert.id)}`;
  ack.textContent = 'Acknowledge';
  ack.setAttribute('aria-label', `Acknowledge ${alert.code} alert for patient ${patient}`);

  tr.append(
    cell('patient', patient),
    cell('rule', rule),
    cell('code', alert.code),
    cell('severity', severity),
    cell('time', time),
    cell('action', ack),
  );
  return tr;
}

function connect(tbody, url) {
  const source = new EventSource(url);
  const seen = new Set();
  const maxRows = Number(tbody.dataset.maxRows) > 0 ? Number(tbody.dataset.maxRows) : DEFAULT_MAX_ROWS;
  tbody.dataset.sseState = 'connecting';
  tbody.dataset.count = tbody.dataset.count || '0';

  source.addEventListener('open', () => {
    tbody.dataset.sseState = 'open';
  });
  source.addEventListener('error', () => {
    // EventSource reconnects by itself unless the answer was not an event stream.
    tbody.dataset.sseState = source.readyState === EventSource.CLOSED ? 'closed' : 'retrying';
  });
  source.addEventListener('alert', (event) => {
    let alert;
    try {
      alert = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!alert || typeof alert.id !== 'string' || seen.has(alert.id)) return;
    seen.add(alert.id);
    for (const placeholder of tbody.querySelectorAll('tr[data-empty]')) placeholder.remove();
    tbody.prepend(alertRow(alert));
    while (tbody.rows.length > maxRows) tbody.deleteRow(tbody.rows.length - 1);
    tbody.dataset.count = String(seen.size);
    tbody.dispatchEvent(new CustomEvent('alert-received', { bubbles: true, detail: alert }));
  });
  source.addEventListener('lagged', (event) => {
    const missed = Number(event.data) || 0;
    tbody.dataset.lagged = String((Number(tbody.dataset.lagged) || 0) + missed);
  });
  return source;
}

/** Opens a feed for every `[data-sse]` tbody under `root` that has none; closes stale ones. */
export function startLiveFeeds(root = document) {
  for (const [tbody, source] of feeds) {
    if (!tbody.isConnected) {
      source.close();
      feeds.delete(tbody);
    }
  }
  for (const tbody of root.querySelectorAll('tbody[data-sse]')) {
    if (feeds.has(tbody)) continue;
    const url = tbody.dataset.sse;
    if (!isSameOrigin(url)) {
      tbody.dataset.sseState = 'refused';
      continue;
    }
    feeds.set(tbody, connect(tbody, url));
  }
}

// Close the streams when the page goes away, so the host does not keep a dead subscriber.
// A page restored from the back/forward cache opens them again.
window.addEventListener('pagehide', () => {
  for (const source of feeds.values()) source.close();
  feeds.clear();
});
window.addEventListener('pageshow', (event) => {
  if (event.persisted) startLiveFeeds(document);
});
