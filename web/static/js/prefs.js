// Everything the UI keeps in the browser (localStorage): theme, open tabs,
// form defaults, and API keys only where the user ticked "remember".

const P = 'execlaw.';

function read(key, fallback) {
  try {
    const raw = localStorage.getItem(P + key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

function write(key, value) {
  try {
    if (value === undefined || value === null) localStorage.removeItem(P + key);
    else localStorage.setItem(P + key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: the UI works, it just forgets.
  }
}

const ID = /^s_[0-9a-f]{24}$/;

// Open tabs: ids in order and the active one ("new" for the form).
export function loadTabs() {
  const t = read('tabs', {});
  const ids = Array.isArray(t.ids) ? t.ids.filter((id) => typeof id === 'string' && ID.test(id)) : [];
  const unique = [...new Set(ids)];
  const active = unique.includes(t.active) ? t.active : (unique.length ? unique[0] : 'new');
  return { ids: unique, active: t.active === 'new' ? 'new' : active };
}

export function saveTabs(ids, active) { write('tabs', { ids, active }); }

// Theme: "light", "dark" or "system".
export function loadTheme() {
  const t = read('theme', 'system');
  return ['light', 'dark', 'system'].includes(t) ? t : 'system';
}
export function saveTheme(t) { write('theme', t); }

export function loadEnterSends() { return read('enterSends', false) === true; }
export function saveEnterSends(v) { write('enterSends', Boolean(v)); }

// Remembered keys, per provider. Kept only on request.
export function loadKeys() {
  const k = read('keys', {});
  return k && typeof k === 'object' ? k : {};
}
export function rememberKey(provider, key) {
  const k = loadKeys();
  if (key) k[provider] = key; else delete k[provider];
  write('keys', k);
}
export function forgetKeys() { write('keys', null); }

// The last form choices (never the key): provider, model and base URL per provider.
export function loadForm() {
  const f = read('form', {});
  return f && typeof f === 'object' ? f : {};
}
export function saveForm(f) { write('form', f); }
