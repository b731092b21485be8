// Smoke test: the host serves the login page with the embedded bundle, the bundle runs, and
// nothing is fetched from another origin (the harness fails the test otherwise).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startHarness } from './harness.mjs';

let h;
before(async () => {
  h = await startHarness({ users: [{ name: 'admin', role: 'admin' }] });
});
after(async () => {
  if (h) await h.close();
});

test('the login page loads the bundle from the host', async (t) => {
  const page = await h.newPage(t);
  const assets = new Map();
  page.on('response', (response) => {
    const { pathname } = new URL(response.url());
    if (pathname.startsWith('/assets/')) assets.set(pathname, response.status());
  });

  const response = await page.goto(h.url('/web/login'), { waitUntil: 'load' });
  await h.screenshot(page, 'login');

  assert.equal(response.status(), 200, `GET /web/login answered ${response.status()}`);
  assert.equal(assets.get('/assets/app.js'), 200, `/assets/app.js: ${assets.get('/assets/app.js') ?? 'not requested'}`);
  assert.equal(assets.get('/assets/app.css'), 200, `/assets/app.css: ${assets.get('/assets/app.css') ?? 'not requested'}`);
  // The bundle ran: htmx is loaded with its SSE extension, and the app's hooks are there.
  const loaded = await page.evaluate(() => ({
    htmx: typeof window.htmx?.process === 'function',
    app: typeof window.GlucoGuard?.api === 'function',
  }));
  assert.deepEqual(loaded, { htmx: true, app: true });
  assert.equal(await page.locator('input[type="password"]').count(), 1, 'the login form has one password field');
});
