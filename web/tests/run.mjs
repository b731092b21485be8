// Runs the browser tests: every web/tests/*.test.mjs (or those whose file name contains one
// of the arguments), one file at a time, with node:test and its spec reporter.
//
//   node web/tests/run.mjs [FILTER…]        (`cargo xtask browser-test` builds what it needs
//                                            first and sets GLUCOGUARD_BIN)
//
// Each test file starts its own host and browser through harness.mjs. Exits non-zero when a
// test fails or the prerequisites are missing; screenshots and host logs are left in the
// artefact folder (target/browser-screenshots/, or GLUCOGUARD_SCREENSHOTS).

import { readdir, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
import { artefactDir, chromiumPath, hostBinary } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2);

/** Per test file: starting a host and Chromium, and a few pages, fit easily. */
const FILE_TIMEOUT_MS = 10 * 60_000;

function fail(message) {
  console.error(`browser tests: ${message}`);
  process.exit(1);
}

// Prerequisites first, with the fix in the message.
let bin;
try {
  chromiumPath();
  bin = hostBinary();
} catch (e) {
  fail(e.message);
}

const files = (await readdir(here))
  .filter((f) => f.endsWith('.test.mjs'))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort()
  .map((f) => path.join(here, f));
if (files.length === 0) fail(`no test file matches ${filters.join(', ') || '*.test.mjs'} in ${here}`);

// The artefact folder holds this run's screenshots and logs only.
const artefacts = artefactDir();
await rm(artefacts, { recursive: true, force: true });
await mkdir(artefacts, { recursive: true });

console.log(`browser tests: ${files.length} file(s) against ${bin}`);
let failed = 0;
const stream = run({ files, concurrency: 1, timeout: FILE_TIMEOUT_MS });
stream.on('test:fail', (event) => {
  // A file's own entry fails with its tests; count the tests (and hooks), not the files.
  if (event.details?.error?.failureType !== 'subtestsFailed') failed++;
});
const report = stream.compose(new spec());
report.pipe(process.stdout, { end: false });
await new Promise((resolve) => report.once('end', resolve));
console.log(`browser tests: screenshots and host logs in ${artefacts}`);
if (failed > 0) {
  console.error(`browser tests: ${failed} failed`);
  process.exitCode = 1;
}
