// The settings dialog: theme, how Enter behaves, and the API keys this
// browser remembers (each can be forgotten).
import { api } from './api.js';
import { $, h, toast, PROVIDER_NAMES as NAMES } from './util.js';
import { loadTheme, loadKeys, rememberKey, forgetKeys, loadEnterSends, saveEnterSends } from './prefs.js';
import { setTheme } from './theme.js';

function mask(key) {
  return key.length <= 8 ? '••••' : `${key.slice(0, 4)}…${key.slice(-4)}`;
}

function renderKeys() {
  const box = $('#set-keys');
  const keys = loadKeys();
  const rows = Object.entries(keys).filter(([, k]) => typeof k === 'string' && k);
  if (!rows.length) {
    box.replaceChildren(h('p', { class: 'hint', text: 'No keys are remembered in this browser.' }));
    return;
  }
  box.replaceChildren(...rows.map(([p, k]) => h('div', { class: 'key-row' },
    h('span', {}, `${NAMES[p] || p}: `, h('code', { text: mask(k) })),
    h('button', { type: 'button', class: 'btn small', 'aria-label': `Forget the ${NAMES[p] || p} key`,
      onclick: () => { rememberKey(p, null); renderKeys(); toast('Key forgotten'); } }, 'Forget'))),
  h('button', { type: 'button', class: 'btn small danger', onclick: () => { forgetKeys(); renderKeys(); toast('All keys forgotten'); } }, 'Forget all'));
}

export function initSettings() {
  const d = $('#settings-dialog');
  $('#settings-btn').addEventListener('click', () => {
    const t = loadTheme();
    for (const r of d.querySelectorAll('input[name=theme]')) r.checked = r.value === t;
    $('#set-enter-sends').checked = loadEnterSends();
    renderKeys();
    d.showModal();
  });
  for (const r of d.querySelectorAll('input[name=theme]')) {
    r.addEventListener('change', () => { if (r.checked) setTheme(r.value); });
  }
  $('#set-enter-sends').addEventListener('change', (e) => saveEnterSends(e.target.checked));
  $('#set-logout').addEventListener('click', () => api.logout());
}
