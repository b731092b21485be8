// Same-origin requests with the session's CSRF token.
//
// The server renders the token of the signed-in session into
// `<meta name="csrf-token" content="...">`; every unsafe request made with the session cookie
// must repeat it in the `x-csrf-token` header (see host/src/admin/auth.rs). htmx requests get
// it from `app.js` (htmx:configRequest); scripts use `api()` below.

/** The header the host checks on unsafe cookie-authenticated requests. */
export const CSRF_HEADER = 'x-csrf-token';

/** The page's CSRF token, or '' when the page has none (signed out). */
export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute('content') || '' : '';
}

/** Whether `url` (absolute or relative to the page) points at the page's own origin. */
export function isSameOrigin(url) {
  try {
    return new URL(url, window.location.href).origin === window.location.origin;
  } catch {
    return false;
  }
}

/** The error `api()` throws for a request it refuses to make or that never got an answer. */
export class RequestError extends Error {
  constructor(message, code) {
    super(message);
    this.name = 'RequestError';
    this.code = code;
  }
}

function isBinary(body) {
  return (
    body instanceof Blob || body instanceof ArrayBuffer || ArrayBuffer.isView(body)
  );
}

/**
 * Sends one request to the host and reads the answer.
 *
 * `body` may be omitted, a string (sent as text), binary (a Blob, File, ArrayBuffer or typed
 * array, sent as is) or anything else (sent as JSON). `options.contentType` overrides the
 * Content-Type; a Blob's own type is used when it has one.
 *
 * Resolves to `{ status, ok, data, response }` for every HTTP answer, errors included:
 * `data` is the parsed JSON when the answer is JSON, else its text. Rejects with a
 * `RequestError` only when the URL is on another origin (code `other_origin`) or the
 * request failed on the network (code `network`).
 */
export async function api(method, url, body, options = {}) {
  if (!isSameOrigin(url)) {
    throw new RequestError(`refusing a request to another origin: ${url}`, 'other_origin');
  }
  const headers = { Accept: 'application/json', [CSRF_HEADER]: csrfToken() };
  let payload;
  if (body !== undefined && body !== null) {
    if (isBinary(body)) {
      payload = body;
      headers['Content-Type'] =
        options.contentType || (body instanceof Blob && body.type) || 'application/octet-stream';
    } else if (typeof body === 'string') {
      payload = body;
      headers['Content-Type'] = options.contentType || 'text/plain; charset=utf-8';
    } else {
      payload = JSON.stringify(body);
      headers['Content-Type'] = options.contentType || 'application/json';
    }
  }
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: payload,
      credentials: 'same-origin',
      signal: options.signal,
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new RequestError(`the host did not answer (${e && e.message ? e.message : e})`, 'network');
  }
  const text = await response.text();
  let data = text;
  if ((response.headers.get('content-type') || '').includes('json') && text !== '') {
    try {
      data = JSON.parse(text);
    } catch {
      // Keep the text: a truncated or malformed body is still worth showing.
    }
  }
  return { status: response.status, ok: response.ok, data, response };
}
