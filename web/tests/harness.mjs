// Browser-test harness: a real `glucoguard run` on a temporary SQLite store and DuckDB file,
// and headless Debian Chromium driven by playwright-core.
//
//   import { startHarness } from './harness.mjs';
//   const h = await startHarness({ users: [{ name: 'admin', role: 'admin' }] });
//   after(() => h.close());
//   test('…', async (t) => {
//     const page = await h.newPage(t);           // fresh browser context, guarded
//     await page.goto(h.url('/web/login'));
//     await h.screenshot(page, 'login');
//   });
//
// Guarantees every test relies on:
//   - no request leaves the host: every request of every page goes through a route that
//     aborts anything not on the host's origin and records it; the test then fails (at the
//     end of the test, from the context's teardown, and again at `close()`);
//   - an uncaught exception in a page fails the test the same way;
//   - each page is screenshotted when its test ends (`<file>--<test>--end.png`), besides any
//     `screenshot()` the test takes, into `target/browser-screenshots/` (`GLUCOGUARD_SCREENSHOTS`
//     overrides), where CI collects them; the host's log is saved there too;
//   - the host is stopped at `close()`, and killed if the test process dies first.
//
// Environment: `GLUCOGUARD_BIN` (the binary; default `$CARGO_TARGET_DIR/debug/glucoguard`),
// `CHROMIUM` (default `/usr/bin/chromium`), `GLUCOGUARD_PLUGIN_DIR` (built rule components),
// `GLUCOGUARD_KEEP_TMP=1` keeps the host's temporary directory for inspection.

import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

/** The repository root (this file is web/tests/harness.mjs). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const STARTUP_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

/** Where screenshots and host logs go. */
export function artefactDir() {
  return path.resolve(REPO_ROOT, process.env.GLUCOGUARD_SCREENSHOTS || path.join('target', 'browser-screenshots'));
}

function targetDir() {
  return process.env.CARGO_TARGET_DIR ? path.resolve(process.env.CARGO_TARGET_DIR) : path.join(REPO_ROOT, 'target');
}

/** The host binary under test. */
export function hostBinary() {
  const bin = process.env.GLUCOGUARD_BIN
    ? path.resolve(process.env.GLUCOGUARD_BIN)
    : path.join(targetDir(), 'debug', process.platform === 'win32' ? 'glucoguard.exe' : 'glucoguard');
  if (!existsSync(bin)) {
    throw new Error(
      `the glucoguard binary is missing at ${bin}: run the tests with \`cargo xtask browser-test\`, ` +
        'or build it (`cargo build -p glucoguard --bin glucoguard`) and set GLUCOGUARD_BIN',
    );
  }
  return bin;
}

/** The Chromium the tests drive: Debian's package, never a downloaded build. */
export function chromiumPath() {
  const exe = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!existsSync(exe)) {
    throw new Error(
      `Chromium is missing at ${exe}: install it with \`apt-get install chromium\` ` +
        '(or point CHROMIUM at a Chromium binary)',
    );
  }
  return exe;
}

/** A built rule component, e.g. `plugin('glucoguard_default_rule')`. */
export function plugin(name) {
  const dir = process.env.GLUCOGUARD_PLUGIN_DIR
    ? path.resolve(process.env.GLUCOGUARD_PLUGIN_DIR)
    : path.join(targetDir(), 'wasm-plugins', 'wasm32-wasip2', 'release');
  const file = path.join(dir, name.endsWith('.wasm') ? name : `${name}.wasm`);
  if (!existsSync(file)) {
    throw new Error(`rule component ${file} is missing: run \`cargo xtask build-plugins\``);
  }
  return file;
}

/** A name safe in a file name: letters, digits, dots, dashes. */
function slug(s) {
  return String(s)
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 80) || 'page';
}

/** Escapes a string for a TOML basic string. */
function tomlString(s) {
  return `"${String(s).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** The host's config: SQLite store, DuckDB analytics, HTTP on a port the OS picks. */
function hostConfig({ rules = [], extraToml = '' }) {
  const lines = [
    '[store]',
    'kind = "sqlite"',
    'path = "glucoguard.db"',
    // A test store need not survive power loss; this keeps writes fast.
    'durable_on_power_loss = false',
    '',
    '[analytics]',
    'path = "analytics.duckdb"',
    '',
    '[pipeline]',
    'max_wait_ms = 5',
    '',
    '[http]',
    // Port 0: the host binds a free port and logs the URL it listens on ("http listening").
    'listen = "127.0.0.1:0"',
    '',
  ];
  for (const rule of rules) lines.push('[[rules]]', `path = ${tomlString(rule)}`, '');
  if (extraToml) lines.push(extraToml, '');
  return lines.join('\n');
}

// Remove ANSI colour codes, in case the log writer colours its output.
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** The URL in the host's "http listening" log line, e.g. `http://127.0.0.1:43121`. */
function listeningUrl(logLine) {
  const line = logLine.replace(ANSI, '');
  if (!line.includes('http listening')) return null;
  const m = /\burl=(https?:\/\/[^\s,]+)/.exec(line);
  return m ? m[1] : null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** Like `sleep`, for the losing side of a race: its timer does not keep the process alive. */
const deadline = (ms) => new Promise((resolve) => setTimeout(resolve, ms).unref());

/** Hosts still running, killed if the process exits without `close()`. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * A `glucoguard run` child with its own temporary directory.
 *
 * `options.rules`: paths of rule components for `[[rules]]`; `options.extraToml`: more config
 * (whole sections); `options.users`: accounts created before the host starts,
 * `{ name, role = 'admin', password = 'correct horse battery staple', subscriber }`.
 */
export class Host {
  static async start(options = {}) {
    const bin = hostBinary();
    const dir = await mkdtemp(path.join(tmpdir(), 'glucoguard-web-'));
    const config = path.join(dir, 'glucoguard.toml');
    await writeFile(config, hostConfig(options));
    const host = new Host(bin, dir, config, options.name || 'host');
    for (const user of options.users || []) await host.addUser(user);
    await host.#spawn();
    return host;
  }

  constructor(bin, dir, config, name) {
    this.bin = bin;
    this.dir = dir;
    this.config = config;
    this.name = name;
    this.baseUrl = null;
    this.child = null;
    /** `{ code, signal }` once the child exited. */
    this.exitStatus = null;
    this.logFile = path.join(dir, 'host.log');
    this.users = new Map();
  }

  /** Runs `glucoguard <args…> --config <config>`; throws with its output when it fails. */
  cli(args, { env = {}, input } = {}) {
    const out = spawnSync(this.bin, [...args, '--config', this.config], {
      cwd: this.dir,
      env: { ...process.env, NO_COLOR: '1', ...env },
      input,
      encoding: 'utf8',
      timeout: 60_000,
    });
    if (out.error) throw out.error;
    if (out.status !== 0) {
      throw new Error(`glucoguard ${args.join(' ')} failed (${out.status}):\n${out.stdout}${out.stderr}`);
    }
    return out.stdout;
  }

  /** Creates an account with `glucoguard users add` (the password goes through the env). */
  async addUser({ name, role = 'admin', password = 'correct horse battery staple', subscriber } = {}) {
    const args = ['users', 'add', name, '--role', role];
    if (subscriber !== undefined) args.push('--subscriber', String(subscriber));
    this.cli(args, { env: { GLUCOGUARD_PASSWORD: password } });
    const user = { name, role, password, subscriber };
    this.users.set(name, user);
    return user;
  }

  async #spawn() {
    const log = createWriteStream(this.logFile);
    const child = spawn(this.bin, ['run', '--config', this.config], {
      cwd: this.dir,
      env: { ...process.env, GLUCOGUARD_LOG: process.env.GLUCOGUARD_LOG || 'info', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    running.add(child);
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited = exited;
    exited.then((e) => {
      running.delete(child);
      this.exitStatus = e;
    });

    // The URL comes from the log on stderr; everything is kept in host.log.
    const url = new Promise((resolve) => {
      let pending = '';
      child.stderr.on('data', (chunk) => {
        log.write(chunk);
        pending += chunk.toString('utf8');
        const lines = pending.split('\n');
        pending = lines.pop();
        for (const line of lines) {
          const found = listeningUrl(line);
          if (found) resolve(found);
        }
      });
    });
    child.stdout.on('data', (chunk) => log.write(chunk));
    child.once('exit', () => log.end());

    const timeout = deadline(STARTUP_TIMEOUT_MS).then(() => 'timeout');
    const first = await Promise.race([url, exited.then((e) => ({ exited: e })), timeout]);
    if (first === 'timeout' || typeof first === 'object') {
      child.kill('SIGKILL');
      const why = first === 'timeout' ? `did not log its HTTP address within ${STARTUP_TIMEOUT_MS / 1000} s` : `exited early (${JSON.stringify(first.exited)})`;
      throw new Error(`glucoguard run ${why}; its log:\n${await this.logTail()}`);
    }
    this.baseUrl = first;
    await this.#waitReady();
  }

  async #waitReady() {
    const started = Date.now();
    let last = 'no answer';
    for (;;) {
      if (this.exitStatus) {
        throw new Error(`glucoguard run exited before it was ready (${JSON.stringify(this.exitStatus)}); its log:\n${await this.logTail()}`);
      }
      try {
        const res = await fetch(this.url('/ready'));
        if (res.status === 200) return;
        last = `HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`;
      } catch (e) {
        last = e.message;
      }
      if (Date.now() - started > STARTUP_TIMEOUT_MS) {
        throw new Error(`glucoguard run was not ready within ${STARTUP_TIMEOUT_MS / 1000} s (${last}); its log:\n${await this.logTail()}`);
      }
      await sleep(100);
    }
  }

  /** An absolute URL on the host. */
  url(pathname = '/') {
    return new URL(pathname, this.baseUrl).href;
  }

  /** The host's origin, `http://127.0.0.1:<port>`. */
  get origin() {
    return new URL(this.baseUrl).origin;
  }

  async log() {
    try {
      return await readFile(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  async logTail(lines = 60) {
    return (await this.log()).split('\n').slice(-lines).join('\n');
  }

  /** SIGTERM (the host drains and exits), SIGKILL if it takes too long; saves the log. */
  async stop() {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const done = await Promise.race([this.exited, deadline(STOP_TIMEOUT_MS).then(() => null)]);
      if (!done) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    const artefacts = artefactDir();
    await mkdir(artefacts, { recursive: true });
    await writeFile(path.join(artefacts, `${slug(this.name)}-host.log`), await this.log());
    if (!process.env.GLUCOGUARD_KEEP_TMP) await rm(this.dir, { recursive: true, force: true });
  }
}

/** Whether a request stays on the host: its origin, or a URL that makes no request at all. */
function isLocal(url, origin) {
  if (url.startsWith('data:') || url.startsWith('blob:') || url === 'about:blank') return true;
  try {
    return new URL(url).origin === origin;
  } catch {
    return false;
  }
}

/**
 * A started host plus a browser. Create it with `startHarness()`; each test gets pages from
 * `newPage(t)`; `close()` at the end (`after(() => h.close())`).
 */
export class Harness {
  constructor(host, browser, name) {
    this.host = host;
    this.browser = browser;
    this.name = name;
    /** Requests to another origin, `{ url, page, test }`, aborted. */
    this.foreignRequests = [];
    /** Uncaught exceptions in pages, `{ message, page, test }`. */
    this.pageErrors = [];
    this.contexts = new Set();
    this.watched = new WeakSet();
    this.shots = 0;
  }

  url(pathname) {
    return this.host.url(pathname);
  }

  /**
   * A page in a fresh browser context (its own cookies) on a 1280×800 viewport unless
   * `options.viewport` says otherwise. With a node:test context `t`, the page is
   * screenshotted and its context closed when the test ends, and the test fails if the page
   * requested another origin or threw.
   */
  async newPage(t, options = {}) {
    const testName = t && t.name ? t.name : 'page';
    const context = await this.browser.newContext({
      viewport: options.viewport || { width: 1280, height: 800 },
      serviceWorkers: 'block',
      locale: options.locale || 'en-GB',
      timezoneId: options.timezoneId,
    });
    this.contexts.add(context);
    const foreign = [];
    const errors = [];
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (isLocal(url, this.host.origin)) return route.continue();
      const entry = { url, test: testName };
      foreign.push(entry);
      this.foreignRequests.push(entry);
      return route.abort('blockedbyclient');
    });
    // Pages the context opens later (popups, target=_blank) are watched too.
    context.on('page', (p) => this.#watch(p, testName, errors));
    const page = await context.newPage();
    this.#watch(page, testName, errors);
    if (t && typeof t.after === 'function') {
      t.after(async () => {
        if (!page.isClosed()) await this.screenshot(page, `${testName}--end`).catch(() => {});
        await context.close();
        this.contexts.delete(context);
        for (const entry of [...foreign, ...errors]) entry.reported = true;
        this.assertClean(foreign, errors);
      });
    }
    page.foreignRequests = foreign;
    page.pageErrors = errors;
    return page;
  }

  #watch(page, testName, errors) {
    if (this.watched.has(page)) return;
    this.watched.add(page);
    page.on('pageerror', (error) => {
      const entry = { message: error.message, test: testName, url: page.url() };
      errors.push(entry);
      this.pageErrors.push(entry);
    });
  }

  /**
   * Throws when any of these foreign requests or page errors exist; by default those no
   * test's teardown reported yet (pages made without a test context).
   */
  assertClean(
    foreign = this.foreignRequests.filter((f) => !f.reported),
    errors = this.pageErrors.filter((e) => !e.reported),
  ) {
    const problems = [
      ...foreign.map((f) => `request to another origin (blocked): ${f.url} [${f.test}]`),
      ...errors.map((e) => `uncaught exception in the page ${e.url}: ${e.message} [${e.test}]`),
    ];
    if (problems.length) throw new Error(problems.join('\n'));
  }

  /** Saves a full-page screenshot as `<harness>--<name>.png`; returns its path. */
  async screenshot(page, name) {
    const dir = artefactDir();
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, `${slug(this.name)}--${String(++this.shots).padStart(2, '0')}-${slug(name)}.png`);
    await page.screenshot({ path: file, fullPage: true });
    return file;
  }

  /**
   * Signs `page`'s context in through `POST /api/login` (the session cookie is shared by the
   * context's pages); returns the login answer (`username`, `role`, `csrf_token`, …).
   */
  async login(page, name, password) {
    const user = this.host.users.get(name);
    const res = await page.context().request.post(this.url('/api/login'), {
      data: { username: name, password: password ?? (user && user.password) },
    });
    if (res.status() !== 200) throw new Error(`login as ${name} answered ${res.status()}: ${await res.text()}`);
    return res.json();
  }

  async close() {
    for (const context of this.contexts) await context.close().catch(() => {});
    await this.browser.close().catch(() => {});
    await this.host.stop();
    this.assertClean();
  }
}

/**
 * Starts a host (see `Host.start` for `options`) and a headless Chromium. `options.name`
 * prefixes the artefacts (default: the test file's name).
 */
export async function startHarness(options = {}) {
  const name = options.name || path.basename(process.argv[1] || 'browser', '.mjs').replace(/\.test$/, '');
  const executablePath = chromiumPath();
  const host = await Host.start({ ...options, name });
  let browser;
  try {
    // playwright-core adds --headless, --no-sandbox and --disable-dev-shm-usage itself.
    browser = await chromium.launch({ executablePath });
  } catch (e) {
    await host.stop();
    throw new Error(`Chromium (${executablePath}) did not start: ${e.message}`);
  }
  return new Harness(host, browser, name);
}
