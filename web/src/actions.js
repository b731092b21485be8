// Changes made from the pages, each one call to the JSON API (`api()` sends the CSRF token),
// so the API's role checks, validation and audit apply to the browser exactly as to a script.
//
//   button[data-api][data-url]   one call: method from `data-api`, JSON body from `data-body`,
//                                `data-confirm` asks first; the page reloads on success.
//   form[data-api][data-url]     the form's fields as JSON, shaped by `data-shape`:
//                                  fields  every named input (`data-type="number"` as a number,
//                                          blank optional ones left out), plus `data-extra`
//                                  params  rule parameters (numbers, checkboxes as booleans)
//                                  scope   a rule scope from the `kind` radio and `list`
//                                  note    `{note}`; the clicked button's `data-url` is the call
//   form#login-form              logs in and goes to `data-next`
//   [data-logout]                logs out
//   select[data-unit-switch]     the user's glucose unit, kept with their account
//                                (`PUT /api/me/preferences`), so every browser shows it
// Errors are shown in `#flash` (or the login form's `#login-error`) with the API's message.

import { api } from './api.js';

function flash(message, kind = 'error') {
  const box = document.getElementById('flash');
  if (!box) return;
  box.textContent = message;
  box.className = kind;
  box.setAttribute('data-kind', kind);
}

function errorText(reply) {
  const d = reply.data;
  if (d && typeof d === 'object' && d.error) return `${d.error}${d.code ? ` (${d.code})` : ''}`;
  return `the host answered ${reply.status}`;
}

async function call(method, url, body) {
  try {
    const reply = await api(method, url, body);
    if (reply.ok) return reply;
    flash(errorText(reply));
  } catch (e) {
    flash(e.message || String(e));
  }
  return null;
}

function numberOrText(input) {
  const v = input.value.trim();
  if (input.getAttribute('data-type') === 'number') return v === '' ? undefined : Number(v);
  return v === '' ? undefined : v;
}

/** The JSON body of a `form[data-api]`, by its `data-shape`. */
export function formBody(form, submitter) {
  const shape = form.getAttribute('data-shape') || 'fields';
  if (shape === 'note') {
    const note = (form.elements.namedItem('note')?.value || '').trim();
    return note ? { note } : {};
  }
  if (shape === 'scope') {
    const kind = form.querySelector('input[name="kind"]:checked')?.value || 'all';
    const list = (form.elements.namedItem('list')?.value || '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    if (kind === 'profiles') return { kind, profiles: list };
    if (kind === 'patients') return { kind, patients: list.map(Number) };
    return { kind: 'all' };
  }
  const body = JSON.parse(form.getAttribute('data-extra') || '{}');
  for (const input of form.querySelectorAll('input[name], select[name], textarea[name]')) {
    if (input.type === 'radio' && !input.checked) continue;
    if (input.type === 'checkbox') {
      body[input.name] = input.checked;
      continue;
    }
    const v = numberOrText(input);
    if (v !== undefined) body[input.name] = v;
  }
  return body;
}

function wireButtons(root) {
  for (const button of root.querySelectorAll('button[data-api]:not([data-wired])')) {
    button.setAttribute('data-wired', '');
    button.addEventListener('click', async () => {
      const confirmText = button.getAttribute('data-confirm');
      if (confirmText && !window.confirm(confirmText)) return;
      button.disabled = true;
      const body = button.hasAttribute('data-body')
        ? JSON.parse(button.getAttribute('data-body'))
        : undefined;
      const ok = await call(button.getAttribute('data-api'), button.getAttribute('data-url'), body);
      button.disabled = false;
      if (ok) window.location.reload();
    });
  }
}

function wireForms(root) {
  for (const form of root.querySelectorAll('form[data-api]:not([data-wired])')) {
    form.setAttribute('data-wired', '');
    const current = form.getAttribute('data-current');
    if (form.getAttribute('data-shape') === 'scope' && current) {
      // Start the scope form from the scope in force.
      const scope = JSON.parse(current);
      const radio = form.querySelector(`input[name="kind"][value="${scope.kind}"]`);
      if (radio) radio.checked = true;
      const list = scope.profiles || scope.patients || [];
      const input = form.elements.namedItem('list');
      if (input) input.value = list.join(', ');
    }
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const submitter = event.submitter;
      const url = submitter?.getAttribute('data-url') || form.getAttribute('data-url');
      const ok = await call(form.getAttribute('data-api'), url, formBody(form, submitter));
      if (ok) window.location.reload();
    });
  }
}

function wireLogin() {
  const form = document.getElementById('login-form');
  if (!form || form.hasAttribute('data-wired')) return;
  form.setAttribute('data-wired', '');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const error = document.getElementById('login-error');
    const body = {
      username: form.elements.namedItem('username').value,
      password: form.elements.namedItem('password').value,
    };
    let reply;
    try {
      reply = await api('POST', '/api/login', body);
    } catch (e) {
      reply = { ok: false, status: 0, data: { error: e.message } };
    }
    if (reply.ok) {
      window.location.assign(form.getAttribute('data-next') || '/web');
      return;
    }
    error.hidden = false;
    error.textContent =
      reply.status === 429
        ? 'Too many attempts: wait a while before trying again.'
        : reply.status === 401
          ? 'Wrong username or password.'
          : errorText(reply);
  });
}

function wireLogout(root) {
  for (const button of root.querySelectorAll('[data-logout]:not([data-wired])')) {
    button.setAttribute('data-wired', '');
    button.addEventListener('click', async () => {
      await call('POST', '/api/logout');
      window.location.assign('/web/login');
    });
  }
}

function wireUnitSwitch(root) {
  for (const select of root.querySelectorAll('select[data-unit-switch]:not([data-wired])')) {
    select.setAttribute('data-wired', '');
    select.addEventListener('change', async () => {
      const reply = await call('PUT', '/api/me/preferences', { glucose_unit: select.value });
      if (reply) window.location.reload();
    });
  }
}

/** Wires every action under `root` (idempotent). */
export function wireActions(root) {
  wireButtons(root);
  wireForms(root);
  wireLogin();
  wireLogout(root);
  wireUnitSwitch(root);
}
