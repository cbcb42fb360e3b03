// The page's dialogs (the <dialog> elements in index.html): confirmation,
// the session list, about, the API key a paused session needs again, and the
// e-mail and exe.dev hand-offs that only appear where /api/platform says the
// server offers them.
import { api } from './api.js';
import { h, $, fmtTime, fmtTokens, fmtCost, toast, ENDED, STATE_LABEL, PROVIDER_NAMES } from './util.js';

// confirmDialog asks a yes/no question; it resolves true for OK.
export function confirmDialog(title, text, okLabel = 'OK') {
  const d = $('#confirm-dialog');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = okLabel;
  d.returnValue = '';
  d.showModal();
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
  });
}

// openSessions lists the user's sessions; choosing one calls onOpen(id).
export async function openSessions(onOpen, openIds) {
  const d = $('#sessions-dialog');
  const list = $('#sessions-list');
  list.replaceChildren(h('p', { class: 'hint', text: 'Loading…' }));
  if (!d.open) d.showModal();
  let sessions;
  try {
    sessions = (await api.list()).sessions || [];
  } catch (err) {
    list.replaceChildren(h('p', { class: 'problem', text: err.message }));
    return;
  }
  if (!sessions.length) {
    list.replaceChildren(h('p', { class: 'hint', text: 'No sessions yet.' }));
    return;
  }
  list.replaceChildren(...sessions.map((s) => {
    const ended = ENDED.has(s.state);
    let state = STATE_LABEL[s.state] || s.state;
    if (ended) state += ' · read-only';
    // Paused sessions are not ended: they open live, and a message resumes them.
    if (s.state === 'paused') state += s.keyNeeded ? ' · needs its key to resume' : ' · resumes on a message';
    const u = s.usage || {};
    const meta = [s.provider + ' · ' + s.model, 'started ' + fmtTime(s.createdAt),
      `${fmtTokens(u.inputTokens)} in · ${fmtTokens(u.outputTokens)} out · ${fmtCost(u.costUsd)}`];
    if (openIds.includes(s.id)) meta.push('open in a tab');
    return h('button', {
      type: 'button', class: 's-item', dataset: { sessionId: s.id },
      onclick: () => { d.close(); onOpen(s.id); },
    },
    h('span', { class: `dot s-${s.state}` }),
    h('span', { class: 's-item-name', text: s.name }),
    h('span', { class: 's-item-state', text: state }),
    h('span', { class: 's-item-meta', text: meta.join(' — ') }));
  }));
  list.querySelector('button')?.focus();
}

// askKey asks for the API key of a paused session (view: its info) whose
// key the server no longer holds. It resolves {key, remember}, or null when
// the user cancels. The key is typed masked and never stays in the page.
export function askKey(view, problem = '') {
  const d = $('#key-dialog');
  const form = $('#key-form');
  const input = $('#key-input');
  const show = $('#key-show');
  const provider = PROVIDER_NAMES[view.provider] || view.provider || 'provider';
  $('#key-label').textContent = `${provider} API key`;
  $('#key-text').textContent = `The server restarted and keeps API keys in memory only, so “${view.name}” needs its key again to resume. It is sent to this server only.`;
  $('#key-problem').textContent = problem;
  $('#key-remember').checked = false;
  input.value = '';
  input.type = 'password';
  show.textContent = 'Show';
  show.setAttribute('aria-pressed', 'false');
  show.onclick = () => {
    const on = input.type === 'password';
    input.type = on ? 'text' : 'password';
    show.textContent = on ? 'Hide' : 'Show';
    show.setAttribute('aria-pressed', String(on));
  };
  return new Promise((resolve) => {
    let answer = null;
    form.onsubmit = (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) {
        $('#key-problem').textContent = 'Enter the key.';
        input.focus();
        return;
      }
      answer = { key, remember: $('#key-remember').checked };
      d.close();
    };
    $('#key-cancel').onclick = () => d.close();
    d.addEventListener('close', () => {
      input.value = '';
      input.type = 'password';
      resolve(answer);
    }, { once: true });
    d.showModal();
    input.focus();
  });
}

// openAbout shows the version and what the server runs on.
export async function openAbout(platform) {
  const d = $('#about-dialog');
  const facts = $('#about-facts');
  const p = platform || {};
  const rows = [
    ['Version', p.version || 'unknown'],
    ['Sandbox', `${p.sandbox || '?'}${p.isolated === false ? ' (not isolated)' : ''}`],
    ['Why this sandbox', p.sandboxReason || ''],
    ['Sign-in', p.auth || ''],
  ];
  try {
    const u = await api.userinfo();
    rows.push(['Signed in as', u.email || u.userId || '']);
  } catch { /* shown without it */ }
  facts.replaceChildren(...rows.filter(([, v]) => v).flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })]));
  try {
    const r = await fetch('/static/vendor/VERSIONS', { credentials: 'same-origin' });
    const text = r.ok ? await r.text() : '';
    const pkgs = new Set(text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(' ').slice(0, 2).join(' ')));
    $('#about-versions').textContent = [...pkgs].join('\n');
  } catch { /* optional */ }
  d.showModal();
}

// openEmail sends the session's transcript by e-mail.
export function openEmail(view) {
  const d = $('#email-dialog');
  const form = $('#email-form');
  const problem = $('#email-problem');
  problem.textContent = '';
  form.onsubmit = async (e) => {
    e.preventDefault();
    const to = $('#email-to').value.trim();
    if (!$('#email-to').checkValidity() || !to) {
      problem.textContent = 'Enter an e-mail address.';
      return;
    }
    try {
      await api.email(view.id, to);
      d.close();
      toast(`Transcript sent to ${to}`);
    } catch (err) {
      problem.textContent = err.message;
    }
  };
  d.showModal();
}

// openExeDev hands the conversation to a new exe.dev VM.
export function openExeDev(view) {
  const d = $('#exedev-dialog');
  const form = $('#exedev-form');
  const problem = $('#exedev-problem');
  const result = $('#exedev-result');
  problem.textContent = '';
  result.hidden = true;
  const name = $('#exedev-name');
  if (!name.value) name.value = String(view.info.name || 'execlaw').toLowerCase().replace(/[^a-z0-9-]+/g, '-').slice(0, 30).replace(/^-+|-+$/g, '') || 'execlaw';
  const prompt = $('#exedev-prompt');
  // The server appends the session's transcript to this prompt.
  if (!prompt.value) prompt.value = `Continue the work of the ExeClaw session “${view.info.name}”; its transcript follows.`;
  form.onsubmit = async (e) => {
    e.preventDefault();
    if (!form.checkValidity()) {
      problem.textContent = 'A VM name (lower-case letters, digits and dashes) and a token are needed.';
      return;
    }
    problem.textContent = '';
    try {
      const r = await api.exedevNew(name.value.trim(), prompt.value, $('#exedev-token').value, view.id);
      const links = [];
      for (const [label, url] of [['VM', r.url], ['Shelley', r.shelleyUrl]]) {
        if (typeof url === 'string' && /^https:\/\//.test(url)) {
          links.push(h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', text: `${label}: ${url}` }), h('br'));
        }
      }
      const note = r.truncated ? ' The transcript was too long for exe.dev and was cut; the prompt says so.' : '';
      result.replaceChildren(h('span', { text: `Created ${r.vmName || name.value}.${note} ` }), ...links);
      result.hidden = false;
      $('#exedev-token').value = '';
    } catch (err) {
      problem.textContent = err.message;
    }
  };
  d.showModal();
}
