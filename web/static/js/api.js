// The server's JSON API (docs/api.md). Same-origin fetches with the
// login cookie; state-changing requests are JSON, which the server requires.
// A 401 means the login has lapsed: go to the login page.

export class APIError extends Error {
  constructor(status, message, data = null) {
    super(message);
    this.status = status;
    // A paused session whose API key the server no longer holds (it
    // restarted): resume it with the key.
    this.keyNeeded = Boolean(data && data.keyNeeded === true);
  }
}

let redirecting = false;

export function toLogin() {
  if (redirecting) return;
  redirecting = true;
  window.location.assign('/login');
}

async function call(method, path, body, headers = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers }, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new APIError(0, 'The server cannot be reached: ' + err.message);
  }
  if (resp.status === 401) {
    toLogin();
    throw new APIError(401, 'Signed out');
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    const msg = data && typeof data.error === 'string' ? data.error : `${method} ${path}: HTTP ${resp.status}`;
    throw new APIError(resp.status, msg, data);
  }
  return data;
}

const sid = (id) => '/api/sessions/' + encodeURIComponent(id);

export const api = {
  platform: () => call('GET', '/api/platform'),
  system: () => call('GET', '/api/system'),
  userinfo: () => call('GET', '/api/userinfo'),
  models(provider, baseUrl, key) {
    const q = baseUrl ? '?baseUrl=' + encodeURIComponent(baseUrl) : '';
    // The key goes in a header, never the URL: URLs end up in logs.
    const hdr = key ? { 'X-Api-Key': key } : {};
    return call('GET', '/api/models/' + encodeURIComponent(provider) + q, undefined, hdr);
  },
  list: () => call('GET', '/api/sessions'),
  create: (req) => call('POST', '/api/sessions', req),
  status: (id) => call('GET', sid(id) + '/status'),
  rename: (id, name) => call('PATCH', sid(id), { name }),
  input: (id, message) => call('POST', sid(id) + '/input', { message }),
  cancel: (id) => call('POST', sid(id) + '/cancel', {}),
  pause: (id) => call('POST', sid(id) + '/pause'),
  // The key, when the server needs it again, goes in the body, never the URL.
  resume: (id, apiKey) => call('POST', sid(id) + '/resume', apiKey ? { apiKey } : undefined),
  end: (id) => call('DELETE', sid(id)),
  email: (id, to) => call('POST', sid(id) + '/email', { to }),
  // sessionId (an extension) makes the server append that session's transcript to the prompt.
  exedevNew: (vmName, prompt, token, sessionId) => call('POST', '/api/exedev/new', { vmName, prompt, token, sessionId }),
  // The ports programs in the sandbox listen on, with preview links (ports.js).
  ports: (id) => call('GET', sid(id) + '/ports'),
  // The workspace (files.js): a directory's entries, a file's bytes (a
  // download; uploads PUT to the same URL), the whole of it as a .tar.gz,
  // what changed since the session began, and a new session's archive.
  files: (id, path) => call('GET', sid(id) + '/files?path=' + encodeURIComponent(path || '')),
  fileURL: (id, path) => sid(id) + '/files/content?path=' + encodeURIComponent(path),
  workspaceURL: (id) => sid(id) + '/workspace.tar.gz',
  changes: (id) => call('GET', sid(id) + '/changes'),
  archiveURL: (id) => sid(id) + '/archive',
  transcriptURL: (id, format = 'md') => sid(id) + '/transcript?format=' + format,
  streamURL: (id, after) => sid(id) + '/stream' + (after > 0 ? '?after=' + after : ''),
  async logout() {
    await fetch('/logout', { method: 'POST', credentials: 'same-origin' }).catch(() => {});
    toLogin();
  },
};
