// Rule upload: `<form id="rule-upload" data-upload-url="/api/rules">` holding a drop zone
// `[data-dropzone]` and an `<input type="file" accept=".wasm">`, and an `#upload-result`
// element (created after the form when the page has none).
//
// Dropping a file on the zone, picking one, or submitting the form with one chosen POSTs its
// raw bytes (`Content-Type: application/wasm`, the CSRF header) to the upload URL.
// `upload_rule` in host/src/admin/api.rs answers
//   201 { rule: { name, version }, sha256, info: RuleInfo, dry_run: DryRun }
//   4xx { error: "<why, for people>", code: "<stable machine code>" }
// While the request runs the form has `aria-busy="true"`, class `htmx-request` and
// `data-state="uploading"`. Afterwards `#upload-result` (and the form's `data-state`) is
//   - `accepted`: class `accepted`, `data-rule`, `data-version`, `data-sha256`; it lists what the
//     rule declares and what its dry run did; a bubbling `rule-uploaded` event (detail: the
//     answer) fires on the form, so a list can refresh with `hx-trigger="rule-uploaded from:body"`;
//   - `refused`: class `refused`, `data-code` (the answer's code, `http_<status>` when the answer
//     had none, `network` when there was no answer, `no_file` when nothing was chosen), and the
//     answer's `error` and `code` as text.

import { api } from './api.js';

function element(tag, text, className) {
  const el = document.createElement(tag);
  if (text !== undefined && text !== null) el.textContent = String(text);
  if (className) el.className = className;
  return el;
}

function definitionList(pairs) {
  const dl = document.createElement('dl');
  for (const [term, value] of pairs) {
    dl.append(element('dt', term));
    const dd = element('dd');
    if (value instanceof Node) dd.append(value);
    else dd.textContent = value;
    dl.append(dd);
  }
  return dl;
}

function duration(secs) {
  if (secs % 86400 === 0) return `${secs / 86400} d`;
  if (secs % 3600 === 0) return `${secs / 3600} h`;
  if (secs % 60 === 0) return `${secs / 60} min`;
  return `${secs} s`;
}

function paramsTable(params) {
  const table = element('table', null, 'params');
  const head = table.createTHead().insertRow();
  for (const h of ['Parameter', 'Type', 'Default', 'Min', 'Max', 'Description']) {
    const th = element('th', h);
    th.scope = 'col';
    head.append(th);
  }
  const body = table.createTBody();
  for (const p of params) {
    const row = body.insertRow();
    row.dataset.param = p.name;
    for (const v of [p.name, p.type, p.default, p.min ?? '–', p.max ?? '–', p.description]) {
      row.insertCell().textContent = String(v);
    }
  }
  return table;
}

/** What an accepted rule declares and what its dry run did, as DOM. */
function describeAccepted(answer) {
  const info = answer.info || {};
  const dry = answer.dry_run || {};
  const rule = answer.rule || { name: info.name, version: info.version };
  const parts = [element('h3', `Uploaded ${rule.name} ${rule.version}`)];
  if (info.description) parts.push(element('p', info.description));
  const windows = (info.windows || []).map((w) => `${w.name} (${duration(w.duration_secs)})`);
  const sha = element('code', answer.sha256);
  parts.push(
    definitionList([
      ['Reads', (info.kinds || []).join(', ') || '–'],
      ['Windows', windows.join(', ') || 'none'],
      ['SHA-256', sha],
    ]),
  );
  if ((info.params || []).length) parts.push(paramsTable(info.params));
  else parts.push(element('p', 'No parameters.'));
  const byCode = Object.entries(dry.alerts_by_code || {}).map(([code, n]) => `${code}: ${n}`);
  const summary =
    `Dry run on ${dry.sample_readings ?? '?'} sample readings: ` +
    `${dry.readings_evaluated ?? '?'} evaluated in ${dry.calls ?? '?'} calls, ` +
    `${dry.alerts ?? 0} ${dry.alerts === 1 ? 'alert' : 'alerts'}` +
    (byCode.length ? ` (${byCode.join(', ')})` : '') +
    '.';
  const p = element('p', summary, 'dry-run');
  p.dataset.alerts = String(dry.alerts ?? 0);
  parts.push(p);
  return parts;
}

function resultElement(form) {
  let result = document.getElementById('upload-result');
  if (!result) {
    result = element('div');
    result.id = 'upload-result';
    form.after(result);
  }
  if (!result.hasAttribute('aria-live')) result.setAttribute('aria-live', 'polite');
  return result;
}

function showRefused(form, result, error, code) {
  result.className = 'refused';
  result.dataset.state = 'refused';
  result.dataset.code = code;
  for (const k of ['rule', 'version', 'sha256']) delete result.dataset[k];
  const message = element('p');
  message.append(element('strong', 'Refused: '), String(error), ' ', element('code', code));
  result.replaceChildren(message);
  form.dataset.state = 'refused';
}

function showAccepted(form, result, answer) {
  result.className = 'accepted';
  result.dataset.state = 'accepted';
  delete result.dataset.code;
  result.dataset.rule = answer.rule?.name ?? '';
  result.dataset.version = answer.rule?.version ?? '';
  result.dataset.sha256 = answer.sha256 ?? '';
  result.replaceChildren(...describeAccepted(answer));
  form.dataset.state = 'accepted';
  form.dispatchEvent(new CustomEvent('rule-uploaded', { bubbles: true, detail: answer }));
}

async function upload(form, file) {
  const result = resultElement(form);
  if (!file) {
    showRefused(form, result, 'choose a .wasm file first', 'no_file');
    return;
  }
  if (form.dataset.state === 'uploading') return; // one at a time
  form.dataset.state = 'uploading';
  form.setAttribute('aria-busy', 'true');
  form.classList.add('htmx-request');
  result.className = '';
  result.dataset.state = 'uploading';
  result.replaceChildren(element('p', `Checking ${file.name}…`));
  try {
    const answer = await api('POST', form.dataset.uploadUrl || '/api/rules', file, {
      contentType: 'application/wasm',
    });
    if (answer.status === 201 && answer.data && typeof answer.data === 'object') {
      showAccepted(form, result, answer.data);
    } else {
      const body = answer.data && typeof answer.data === 'object' ? answer.data : {};
      const error = body.error || (typeof answer.data === 'string' && answer.data) || `HTTP ${answer.status}`;
      showRefused(form, result, error, body.code || `http_${answer.status}`);
    }
  } catch (e) {
    showRefused(form, result, e.message, e.code || 'network');
  } finally {
    form.removeAttribute('aria-busy');
    form.classList.remove('htmx-request');
  }
}

const wired = new WeakSet();

function wire(form) {
  const input = form.querySelector('input[type="file"]');
  const zone = form.querySelector('[data-dropzone]');
  const send = (file) => {
    upload(form, file).finally(() => {
      // Picking the same file again must fire `change` again.
      if (input) input.value = '';
    });
  };
  if (input) input.addEventListener('change', () => input.files.length && send(input.files[0]));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    send(input && input.files.length ? input.files[0] : null);
  });
  if (!zone) return;
  const over = (event) => {
    if (!event.dataTransfer || ![...event.dataTransfer.types].includes('Files')) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    zone.classList.add('dragover');
  };
  zone.addEventListener('dragenter', over);
  zone.addEventListener('dragover', over);
  zone.addEventListener('dragleave', (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove('dragover');
  });
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('dragover');
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) send(file);
  });
  // A click on the zone (outside the input and its label) opens the file picker.
  zone.addEventListener('click', (event) => {
    if (input && !event.target.closest('input, label, button, a')) input.click();
  });
}

let guarded = false;

/** Wires every `form#rule-upload[data-upload-url]` under `root` (once each). */
export function wireUploads(root = document) {
  for (const form of root.querySelectorAll('form#rule-upload[data-upload-url]')) {
    if (wired.has(form)) continue;
    wired.add(form);
    wire(form);
    if (!guarded) {
      // A file dropped next to the zone would make the browser open (download) it.
      guarded = true;
      for (const type of ['dragover', 'drop']) {
        window.addEventListener(type, (event) => {
          if (event.dataTransfer && [...event.dataTransfer.types].includes('Files')) event.preventDefault();
        });
      }
    }
  }
}
