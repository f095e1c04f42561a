// Talking to ComfyGate: JSON that keeps 64-bit seeds exact, fetch with the API key, and the key dialog.

const MARK = '\u0000bigint:';
const MARK_JSON = '\\u0000bigint:';
const LONG_DIGITS = /\d{16,}/;

/** JSON.parse, except integers beyond 2**53 become BigInt instead of being silently rounded. */
export function parseJSON(text) {
  if (!LONG_DIGITS.test(text) || text.includes(MARK_JSON)) return JSON.parse(text);
  let out = '';
  let last = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 34) { // a string: skip it whole, escapes included
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 92) i += 2;
        else if (d === 34) { i++; break; } else i++;
      }
      continue;
    }
    if (c === 45 || (c >= 48 && c <= 57)) {
      let j = i + 1;
      while (j < n && '0123456789.eE+-'.includes(text[j])) j++;
      const token = text.slice(i, j);
      if (/^-?\d{16,}$/.test(token) && !Number.isSafeInteger(Number(token))) {
        out += `${text.slice(last, i)}"${MARK_JSON}${token}"`;
        last = j;
      }
      i = j;
      continue;
    }
    i++;
  }
  out += text.slice(last);
  return JSON.parse(out, (_k, v) => (typeof v === 'string' && v.startsWith(MARK) ? BigInt(v.slice(MARK.length)) : v));
}

/** JSON.stringify that writes BigInt values as plain JSON integers. */
export function stringifyJSON(value, indent) {
  let big = false;
  const text = JSON.stringify(value, (_k, v) => {
    if (typeof v === 'bigint') { big = true; return MARK + v.toString(); }
    return v;
  }, indent);
  return big ? text.replace(/"\\u0000bigint:(-?\d+)"/g, '$1') : text;
}

// --- the API key --------------------------------------------------------------------------------
const KEY_STORAGE = 'comfygate.apiKey';

export const auth = {
  get key() {
    try { return sessionStorage.getItem(KEY_STORAGE) || ''; } catch { return ''; }
  },
  set key(value) {
    try {
      if (value) sessionStorage.setItem(KEY_STORAGE, value);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch { /* storage disabled: the key lives for this request only */ }
  },
  headers() {
    const key = this.key;
    return key ? { Authorization: `Bearer ${key}` } : {};
  },
};

let asking = null;

/** Ask for the API key with the page's dialog; one dialog at a time, however many requests were refused. */
export function askKey(message) {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const dialog = document.getElementById('key-dialog');
    const input = document.getElementById('key-input');
    document.getElementById('key-message').textContent = message || 'ComfyGate asks for an API key.';
    input.value = '';
    const done = () => {
      dialog.removeEventListener('close', done);
      const ok = dialog.returnValue === 'ok' && input.value.trim();
      if (ok) auth.key = input.value.trim();
      input.value = '';
      asking = null;
      if (ok) window.dispatchEvent(new CustomEvent('comfygate:apikey'));
      resolve(Boolean(ok));
    };
    dialog.addEventListener('close', done);
    dialog.returnValue = '';
    dialog.showModal();
    input.focus();
  });
  return asking;
}

export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body || {};
    this.code = this.body.error || (status === 0 ? 'unreachable' : `http_${status}`);
  }
}

/**
 * Call the API. `json` is sent as a JSON body, `form` as multipart. Answers are parsed with parseJSON.
 * A 401 asks for the key (once) and retries; refusing the dialog raises the 401.
 */
export async function api(path, { method, json, form, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: 'application/json', ...auth.headers() };
    let body;
    if (json !== undefined) { headers['Content-Type'] = 'application/json'; body = stringifyJSON(json); }
    if (form !== undefined) body = form;
    let response;
    try {
      response = await fetch(path, { method: method || (body ? 'POST' : 'GET'), headers, body, signal });
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, null, 'ComfyGate is unreachable (network error)');
    }
    const text = await response.text();
    let data = null;
    try { data = text ? parseJSON(text) : null; } catch { data = { message: text.slice(0, 300) }; }
    if (response.status === 401 && attempt < 5) {
      const hadKey = Boolean(auth.key);
      if (hadKey) auth.key = '';
      const ok = await askKey(hadKey ? 'That API key was refused; enter another.' : 'ComfyGate asks for an API key.');
      if (ok) continue;
    }
    if (!response.ok) {
      const message = (data && (data.message || data.detail)) || `${response.status} ${response.statusText}`;
      const err = new ApiError(response.status, data, typeof message === 'string' ? message : stringifyJSON(message));
      err.retryAfter = Number(response.headers.get('Retry-After')) || null;
      throw err;
    }
    return data;
  }
}

/** A URL for <img>/<a>: the plain path, or a blob: URL fetched with the key when one is in use. */
export async function mediaUrl(path) {
  if (!auth.key) return path;
  const response = await fetch(path, { headers: auth.headers() });
  if (!response.ok) throw new ApiError(response.status, null, `could not fetch ${path}`);
  return URL.createObjectURL(await response.blob());
}

export function wsUrl(query = '') {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const params = new URLSearchParams(query);
  if (auth.key) params.set('token', auth.key);
  const qs = params.toString();
  return `${proto}//${location.host}/ws${qs ? `?${qs}` : ''}`;
}
