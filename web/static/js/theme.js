// Light and dark themes: the choice ("light", "dark" or "system") is kept in
// localStorage and shown as data-theme on <html>.
import { loadTheme, saveTheme } from './prefs.js';
import { $, icon } from './util.js';

const media = window.matchMedia('(prefers-color-scheme: dark)');

export function effectiveTheme(choice = loadTheme()) {
  if (choice === 'light' || choice === 'dark') return choice;
  return media.matches ? 'dark' : 'light';
}

export function applyTheme() {
  const t = effectiveTheme();
  document.documentElement.dataset.theme = t;
  const btn = $('#theme-btn');
  if (btn) {
    const next = t === 'dark' ? 'light' : 'dark';
    btn.setAttribute('aria-label', `Switch to ${next} theme`);
    btn.title = `Switch to ${next} theme`;
    btn.replaceChildren(icon(t === 'dark' ? 'sun' : 'moon'));
  }
}

export function setTheme(choice) {
  saveTheme(choice);
  applyTheme();
}

// toggleTheme switches between light and dark (and so leaves "system").
export function toggleTheme() {
  setTheme(effectiveTheme() === 'dark' ? 'light' : 'dark');
}

export function initTheme() {
  applyTheme();
  $('#theme-btn').addEventListener('click', toggleTheme);
  media.addEventListener('change', applyTheme);
  // Another window of this app changed it.
  window.addEventListener('storage', (e) => { if (e.key === 'execlaw.theme') applyTheme(); });
}
