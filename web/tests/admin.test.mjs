// The web admin end to end, in headless Chromium against the real host binary: log in
// through the form; upload a rule and see a forbidden one refused; backtest the new version
// and see the diff; enable it; stream readings and watch its alert arrive live without a
// reload; acknowledge it and see the lifecycle change; open the dashboard and check that
// each chart drew the data; a clinician sees only the patients they follow. The harness
// fails a test on any request to another origin, and saves a screenshot of every page.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { plugin, startHarness } from './harness.mjs';

const MIN = 60_000;
let h;
/** The admin's API session (cookie + CSRF token) for seeding and streaming readings. */
let api;
let csrf;
let seq = 0;

/** One glucose reading of `patient` at `atMs`, as a device posts it. */
function reading(patient, atMs, mgDl) {
  seq += 1;
  return {
    reading_id: `web-${seq}`,
    patient_id: patient,
    device_id: 1000 + patient,
    glucose_level: mgDl,
    timestamp: new Date(atMs).toISOString(),
    location: 'home',
  };
}

async function post(path, data, ok = [200, 201, 204]) {
  const res = await api.post(h.url(path), { data, headers: { 'x-csrf-token': csrf } });
  const text = await res.text();
  assert.ok(ok.includes(res.status()), `POST ${path}: ${res.status()} ${text}`);
  if (path === '/api/ingest') assert.deepEqual(JSON.parse(text).rejected, [], `ingest: ${text}`);
  return res;
}

before(async () => {
  h = await startHarness({
    rules: [plugin('glucoguard_default_rule')],
    users: [
      { name: 'admin', role: 'admin' },
      { name: 'doc', role: 'clinician', subscriber: 10 },
    ],
  });
  const { request } = await import('playwright-core');
  api = await request.newContext();
  const res = await api.post(h.url('/api/login'), {
    data: { username: 'admin', password: h.host.users.get('admin').password },
  });
  assert.equal(res.status(), 200, await res.text());
  csrf = (await res.json()).csrf_token;
  await post('/api/dimensions', {
    patients: [
      { patient_id: 1, first_name: 'Ada', last_name: 'Followed', profile: 'diabetic' },
      { patient_id: 2, first_name: 'Bo', last_name: 'Other', profile: 'athlete' },
    ],
    subscribers: [{ subscriber_id: 10, name: 'Dr Who', role: 'doctor' }],
    subscriptions: [{ subscriber_id: 10, patient_id: 1 }],
  });
  // Two hours of 5-minute history for both patients, 100–114 mg/dL: the active rule (above
  // 115) is silent on it, the candidate (above 110) is not.
  const now = Date.now();
  const history = [];
  for (let i = 24; i >= 1; i--) {
    for (const p of [1, 2]) history.push(reading(p, now - i * 5 * MIN, 100 + (i % 15)));
  }
  await post('/api/ingest', history);
});

after(async () => {
  if (api) await api.dispose();
  if (h) await h.close();
});

async function logInThroughTheForm(page, name) {
  await page.goto(h.url('/web/rules'));
  // Anonymous: sent to the login page, which brings us back.
  assert.match(page.url(), /\/web\/login\?next=/);
  await page.getByLabel('Username').fill(name);
  await page.getByLabel('Password').fill(h.host.users.get(name).password);
  await h.screenshot(page, `login-${name}`);
  await Promise.all([page.waitForURL(/\/web\/rules$/), page.getByRole('button', { name: 'Log in' }).click()]);
}

test('an admin uploads, backtests and enables a rule, and acts on its live alert', async (t) => {
  const page = await h.newPage(t);
  await logInThroughTheForm(page, 'admin');
  await h.screenshot(page, 'rules');
  assert.equal(await page.locator('#rules-table tr[data-rule="default-glucose"]').getAttribute('data-status'), 'enabled');

  // A rule that imports the filesystem is refused, with the reason, and nothing is stored.
  await page.locator('#rule-file').setInputFiles(plugin('forbidden_import'));
  const refused = page.locator('#upload-result .refused, #upload-result.refused');
  await refused.first().waitFor();
  assert.equal(await page.locator('#upload-result [data-code], #upload-result[data-code]').first().getAttribute('data-code'), 'forbidden_imports');
  await h.screenshot(page, 'upload-refused');

  // The next version of the default rule is accepted and shows what it declares.
  await page.locator('#rule-file').setInputFiles(plugin('default_rule_next'));
  await page.locator('#upload-result').getByText('1.1.0').first().waitFor();
  await h.screenshot(page, 'upload-accepted');

  // Backtest 1.1.0 against the active 1.0.0 over the stored day.
  await page.goto(h.url('/web/rules/default-glucose'));
  await page.getByLabel('Candidate version').selectOption('1.1.0');
  await page.getByLabel('Days of history').fill('1');
  await page.getByRole('button', { name: 'Run backtest' }).click();
  const diff = page.locator('#backtest-diff');
  await diff.waitFor();
  const added = Number(await diff.getAttribute('data-added'));
  // Readings 111–114 mg/dL are above the candidate's 110 and not above the active 115.
  const expected = [];
  for (let i = 24; i >= 1; i--) if (100 + (i % 15) > 110) expected.push(i);
  assert.equal(added, expected.length * 2, 'added alerts: both patients, 111–114 mg/dL');
  // The per-patient rows add up to the totals.
  const perPatient = await page.locator('#backtest-patients tbody tr[data-patient]').evaluateAll((trs) =>
    trs.map((tr) => [Number(tr.children[1].innerText), Number(tr.children[2].innerText)]),
  );
  assert.equal(perPatient.length, 2);
  assert.equal(perPatient.reduce((s, [a]) => s + a, 0), added);
  assert.equal(perPatient.reduce((s, [, r]) => s + r, 0), Number(await diff.getAttribute('data-removed')));
  await page.locator('#backtest-chart[data-state="drawn"]').waitFor();
  assert.ok(Number(await page.locator('#backtest-chart').getAttribute('data-points')) > 0);
  await h.screenshot(page, 'backtest');

  // Enable 1.1.0.
  await Promise.all([
    page.waitForEvent('load'),
    page.locator('button[data-enable-version="1.1.0"]').click(),
  ]);
  assert.equal(await page.locator('#versions tr[data-version="1.1.0"] .badge.enabled').count(), 1);
  await h.screenshot(page, 'enabled');

  // Live: a reading of 112 mg/dL now alerts under 1.1.0 and arrives without a reload.
  await page.goto(h.url('/web/alerts'));
  // The event stream is open (an empty table body is not "visible": wait for it attached).
  await page.locator('#live-alerts[data-sse-state="open"]').waitFor({ state: 'attached' });
  await post('/api/ingest', [reading(1, Date.now(), 112)]);
  const row = page.locator('#live-alerts tr').first();
  try {
    await row.waitFor({ timeout: 15_000 });
  } catch (e) {
    const alerts = await (await api.get(h.url('/api/alerts?patient_id=1&limit=3'))).text();
    const rules = await (await api.get(h.url('/api/stats'))).text();
    throw new Error(`no live alert: ${e.message}\nnewest alerts: ${alerts}\nstats: ${rules}`);
  }
  assert.match(await row.innerText(), /default-glucose@1\.1\.0/);
  await h.screenshot(page, 'live-alert');

  // Acknowledge it with a note and see the lifecycle change.
  await Promise.all([page.waitForURL(/\/web\/alerts\/.+/), row.getByRole('link').first().click()]);
  assert.equal(await page.locator('#alert-status').innerText(), 'open');
  await page.getByLabel(/Note/).fill('called the patient');
  await Promise.all([page.waitForEvent('load'), page.locator('#ack-button').click()]);
  assert.equal(await page.locator('#alert-status').innerText(), 'acknowledged');
  const history = await page.locator('#alert-history').innerText();
  assert.match(history, /acknowledged by user:admin: “called the patient”/);
  await h.screenshot(page, 'acknowledged');

  // The rules list keeps its counters live: a reading evaluated now shows without a reload.
  await page.goto(h.url('/web/rules'));
  const cell = page.locator('#rules-table tr[data-rule="default-glucose"] [data-col="readings"]');
  const before = Number(await cell.innerText());
  await post('/api/ingest', [reading(2, Date.now(), 101)]);
  await page.waitForFunction(
    ([sel, n]) => Number(document.querySelector(sel)?.innerText) === n,
    ['#rules-table tr[data-rule="default-glucose"] [data-col="readings"]', before + 1],
    { timeout: 20_000 },
  );
});

test('the dashboard draws each chart from the data', async (t) => {
  const page = await h.newPage(t);
  await h.login(page, 'admin');
  await page.goto(h.url('/web/dashboard'));
  assert.equal(await page.locator('#patient-list tbody tr[data-patient]').count(), 2);
  const inRange = await page.locator('#patient-list tr[data-patient="1"] [data-key="in_range"]').innerText();
  assert.equal(Number(inRange), 100, 'every reading of patient 1 is in 70–180');
  await h.screenshot(page, 'dashboard');

  await page.goto(h.url('/web/patients/1'));
  for (const id of ['#series-chart', '#agp-chart']) {
    await page.locator(`${id}[data-state="drawn"]`).waitFor({ timeout: 15_000 });
  }
  // 24 history readings and the live one.
  assert.equal(Number(await page.locator('#series-chart').getAttribute('data-points')), 25);
  assert.ok(Number(await page.locator('#agp-chart').getAttribute('data-points')) > 0);
  assert.equal(await page.locator('#tir-bar [data-band="in-range"]').getAttribute('data-pct'), '100.0');
  assert.match(await page.locator('#live-value .value').innerText(), /112/);
  await h.screenshot(page, 'patient');

  await page.goto(h.url('/web/compare?patients=1,2'));
  await page.locator('#daily-chart[data-state="drawn"]').waitFor({ timeout: 15_000 });
  assert.ok(Number(await page.locator('#daily-chart').getAttribute('data-points')) > 0);
  await h.screenshot(page, 'compare');

  for (const path of ['/web/patients', '/web/devices', '/web/subscribers', '/web/ops', '/web/audit']) {
    const res = await page.goto(h.url(path));
    assert.equal(res.status(), 200, path);
    await h.screenshot(page, path.slice(5));
  }
});

test('a clinician sees only the patients they follow', async (t) => {
  const page = await h.newPage(t, { viewport: { width: 768, height: 1024 } });
  await h.login(page, 'doc');
  await page.goto(h.url('/web/dashboard'));
  const rows = await page.locator('#patient-list tbody tr[data-patient]').evaluateAll((trs) =>
    trs.map((tr) => tr.getAttribute('data-patient')),
  );
  assert.deepEqual(rows, ['1']);
  await h.screenshot(page, 'clinician-dashboard');
  const other = await page.goto(h.url('/web/patients/2'));
  assert.equal(other.status(), 404);
  const ops = await page.goto(h.url('/web/ops'));
  assert.equal(ops.status(), 403);
  await page.goto(h.url('/web/alerts'));
  const patients = await page.locator('#alerts-table tbody tr[data-alert] td:nth-child(2)').allInnerTexts();
  assert.ok(patients.length > 0, 'the followed patient has alerts');
  assert.ok(patients.every((p) => p.trim() === '1'), `only patient 1: ${patients}`);
  await h.screenshot(page, 'clinician-alerts');

  // The clinician reads mmol/L: chosen once, kept with the account, shown in another browser.
  await page.goto(h.url('/web/patients/1'));
  assert.match(await page.locator('#live-value .value').innerText(), /^112 mg\/dL$/);
  await Promise.all([page.waitForEvent('load'), page.getByLabel('Glucose units').selectOption('mmol/L')]);
  assert.equal(await page.locator('body').getAttribute('data-unit'), 'mmol/L');
  assert.match(await page.locator('#live-value .value').innerText(), /^6\.2 mmol\/L$/);
  const elsewhere = await h.newPage(t);
  await h.login(elsewhere, 'doc');
  await elsewhere.goto(h.url('/web/patients/1'));
  assert.match(await elsewhere.locator('#live-value .value').innerText(), /^6\.2 mmol\/L$/);
  await h.screenshot(elsewhere, 'clinician-patient-mmol');
});
