// Progress for long operations (a backtest, a dead-letter replay): a `<form data-progress>`
// or `<form data-progress="Running the backtest…">` shows an indicator while its request runs.
//
// htmx puts the class `htmx-request` on the form for the request's duration; a plain form
// (no hx- attributes) gets it from here on submit and keeps it until the next page loads.
// This script adds, once per form, an indicator `<span class="progress" role="status">` (unless
// the form already has a `.progress` element) whose text is the attribute's value, or
// "Working…", followed by the seconds elapsed; app.css shows it only while the form has
// `htmx-request`. The form also gets `aria-busy="true"` and its submit buttons are disabled,
// so an impatient second click does not start the operation twice.

const DEFAULT_LABEL = 'Working…';
const wired = new WeakSet();
/** The elapsed-seconds timer of each busy form. */
const timers = new WeakMap();

function indicator(form) {
  let el = form.querySelector('.progress');
  if (!el) {
    el = document.createElement('span');
    el.className = 'progress';
    el.setAttribute('role', 'status');
    const bar = document.createElement('span');
    bar.className = 'progress-bar';
    bar.setAttribute('aria-hidden', 'true');
    const label = document.createElement('span');
    label.className = 'progress-label';
    el.append(bar, label);
    form.append(el);
  }
  return el;
}

function setBusy(form, busy) {
  const el = indicator(form);
  const label = el.querySelector('.progress-label') || el;
  const text = form.getAttribute('data-progress') || DEFAULT_LABEL;
  window.clearInterval(timers.get(form));
  if (busy) {
    const started = Date.now();
    label.textContent = text;
    timers.set(
      form,
      window.setInterval(() => {
        label.textContent = `${text} ${Math.round((Date.now() - started) / 1000)} s`;
      }, 1000),
    );
    form.setAttribute('aria-busy', 'true');
    form.classList.add('htmx-request');
  } else {
    label.textContent = '';
    form.removeAttribute('aria-busy');
    form.classList.remove('htmx-request');
  }
  for (const button of form.querySelectorAll('button:not([type="button"]), input[type="submit"]')) {
    button.disabled = busy;
  }
}

/** Whether htmx drives this form (then htmx events bracket the request). */
function isHtmx(form) {
  return ['hx-post', 'hx-get', 'hx-put', 'hx-patch', 'hx-delete'].some((a) => form.hasAttribute(a)) ||
    form.closest('[hx-boost="true"]') !== null;
}

/** Adds indicators to every `form[data-progress]` under `root` (once each). */
export function wireProgress(root = document) {
  for (const form of root.querySelectorAll('form[data-progress]')) {
    if (wired.has(form)) continue;
    wired.add(form);
    indicator(form);
    form.addEventListener('submit', (event) => {
      // Set after the other submit handlers ran: one that cancelled means no request.
      if (!isHtmx(form)) window.setTimeout(() => !event.defaultPrevented && setBusy(form, true));
    });
  }
}

// htmx requests: the events bubble from the form (or from the element inside it that made
// the request) to the document.
function owningForm(event) {
  const elt = event.detail && event.detail.elt;
  const form = elt && elt.closest ? elt.closest('form[data-progress]') : null;
  return form && wired.has(form) ? form : null;
}

document.addEventListener('htmx:beforeRequest', (event) => {
  const form = owningForm(event);
  if (form) setBusy(form, true);
});
document.addEventListener('htmx:afterRequest', (event) => {
  const form = owningForm(event);
  if (form) setBusy(form, false);
});

// Back from the next page through the back/forward cache: the form is idle again.
window.addEventListener('pageshow', (event) => {
  if (!event.persisted) return;
  for (const form of document.querySelectorAll('form[data-progress][aria-busy="true"]')) setBusy(form, false);
});
