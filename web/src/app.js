// The web admin's one script, bundled by esbuild into web/dist/app.js (`cargo xtask build-web`)
// and served by the host as /assets/app.js. It never talks to another origin.
//
// The server renders complete pages; this script adds htmx (with its SSE extension) and the
// behaviour behind a handful of data attributes, each described in its module:
//   api.js       CSRF header on htmx requests and the `api()` fetch helper
//   units.js     `[data-mgdl]` values in the viewer's unit (`<body data-unit>`)
//   times.js     `<time datetime data-local>` in the viewer's zone, `[data-since-ms]` ages
//   charts.js    `[data-chart][data-src]` uPlot charts
//   live.js      `tbody[data-sse]` live alert feed
//   upload.js    `form#rule-upload` rule upload
//   progress.js  `form[data-progress]` progress indicators
//   actions.js   buttons and forms calling the JSON API, login, logout, the unit switch
// and, here, `[data-width-pct]` bars (widths set from script, so pages need no inline styles)
// and horizontal scrolling for wide tables.
//
// Everything is idempotent and runs on load and again after every htmx swap.
//
// The `/*!` comment below is a legal comment: esbuild keeps it in the minified bundle (at its
// end). Update it with the versions in package.json.

/*! Third-party code in this bundle:
 * htmx 2.0.11 and htmx-ext-sse 2.2.4, Zero-Clause BSD (no notice required).
 * uPlot 1.6.32 <https://github.com/leeoniya/uPlot>, MIT License:
 *
 * Copyright (c) 2022 Leon Sorokin
 *
 * Permission is hereby granted, free of charge, to any person obtaining a copy
 * of this software and associated documentation files (the "Software"), to deal
 * in the Software without restriction, including without limitation the rights
 * to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 * copies of the Software, and to permit persons to whom the Software is
 * furnished to do so, subject to the following conditions:
 *
 * The above copyright notice and this permission notice shall be included in
 * all copies or substantial portions of the Software.
 *
 * THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 * IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 * FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 * AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 * LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 * OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
 * THE SOFTWARE.
 */

import htmx from 'htmx.org';
import 'htmx-ext-sse';

import { CSRF_HEADER, api, csrfToken } from './api.js';
import { applyUnits, convert, currentUnit, formatGlucose } from './units.js';
import { applyAges, applyLocalTimes, startAgeTimer } from './times.js';
import { chartOf, drawCharts } from './charts.js';
import { startLiveFeeds } from './live.js';
import { wireUploads } from './upload.js';
import { wireProgress } from './progress.js';
import { wireActions } from './actions.js';

// htmx would add its indicator styles as an inline <style>, which a strict Content-Security-
// Policy refuses; app.css has them instead.
htmx.config.includeIndicatorStyles = false;
// Scripts in swapped-in HTML do not run: behaviour lives in this bundle only.
htmx.config.allowScriptTags = false;
window.htmx = htmx;

// Every htmx request carries the session's CSRF token (htmx only sends same-origin requests:
// `htmx.config.selfRequestsOnly` is on by default in htmx 2).
document.addEventListener('htmx:configRequest', (event) => {
  const token = csrfToken();
  if (token) event.detail.headers[CSRF_HEADER] = token;
});

/** Sets `style.width` of every `[data-width-pct="12.5"]` under `root` (clamped to 0–100 %). */
function applyWidths(root) {
  for (const el of root.querySelectorAll('[data-width-pct]')) {
    const pct = Number(el.getAttribute('data-width-pct'));
    if (Number.isFinite(pct)) el.style.width = `${Math.min(100, Math.max(0, pct))}%`;
  }
}

/** Wraps each table in a horizontally scrolling box, unless the page already did. */
function wrapTables(root) {
  for (const table of root.querySelectorAll('table')) {
    if (table.closest('.table-scroll')) continue;
    const box = document.createElement('div');
    box.className = 'table-scroll';
    table.replaceWith(box);
    box.append(table);
  }
}

/** Applies every behaviour to the page. Safe to call again: each step skips what it did. */
function enhance() {
  const root = document;
  wrapTables(root);
  applyWidths(root);
  applyUnits(root);
  applyLocalTimes(root);
  applyAges(root);
  wireProgress(root);
  wireUploads(root);
  wireActions(root);
  startLiveFeeds(root);
  drawCharts(root);
}

document.addEventListener('htmx:afterSettle', enhance);

function start() {
  enhance();
  startAgeTimer();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();

// For the pages' own scripts (none yet) and the browser tests.
window.GlucoGuard = { api, chartOf, convert, currentUnit, drawCharts, enhance, formatGlucose };
