// ExeClaw's web UI: wires the top bar, the tabs, the new-session form and
// one SessionView per open tab. Open tabs (ids, order, active) are kept in
// localStorage, so they survive a reload.
import { api } from './api.js';
import { $, toast } from './util.js';
import { loadTabs, saveTabs } from './prefs.js';
import { initTheme } from './theme.js';
import { initSettings } from './settings.js';
import { Gauge } from './gauge.js';
import { TabBar } from './tabs.js';
import { StreamPool } from './stream.js';
import { SessionView } from './session.js';
import { NewSessionForm } from './newsession.js';
import { openSessions, openAbout } from './dialogs.js';

const state = {
  order: [], // open tab ids, in tab order
  active: 'new', // a session id, or "new" for the form
  views: new Map(),
  platform: {},
};
const pool = new StreamPool(4);
let tabbar;
let form;

function persist() {
  saveTabs(state.order, state.active);
}

const viewApp = {
  pool,
  get platform() { return state.platform; },
  onChange(view) {
    tabbar.update(view.id, view.info.name, view.state, view.busy);
    if (view.id === state.active) document.title = `${view.info.name} — ExeClaw`;
  },
  onRename(id) { tabbar.startRename(id); },
  onCloseTab(id) { closeTab(id); },
  onGone(id) {
    closeTab(id);
    toast('A session of this tab no longer exists; the tab was closed.', true);
  },
};

function addView(id) {
  if (state.views.has(id)) return state.views.get(id);
  const view = new SessionView(id, viewApp);
  state.views.set(id, view);
  $('#views').append(view.el);
  view.load();
  return view;
}

function activate(id, focus = true) {
  if (id !== 'new' && !state.views.has(id)) id = 'new';
  state.active = id;
  for (const [vid, view] of state.views) if (vid !== id) view.hide();
  $('#new-view').hidden = id !== 'new';
  tabbar.sync(state.order, id);
  persist();
  if (id === 'new') {
    document.title = 'New session — ExeClaw';
    if (focus) form.focus();
    return;
  }
  const view = state.views.get(id);
  view.show();
  viewApp.onChange(view);
  if (focus) view.focus();
}

function openSession(id) {
  if (!state.order.includes(id)) {
    addView(id);
    state.order.push(id);
  }
  activate(id);
}

function closeTab(id) {
  const i = state.order.indexOf(id);
  if (i < 0) return;
  state.order.splice(i, 1);
  const view = state.views.get(id);
  state.views.delete(id);
  view?.destroy();
  if (state.active === id) {
    activate(state.order[Math.min(i, state.order.length - 1)] ?? 'new');
  } else {
    tabbar.sync(state.order, state.active);
    persist();
  }
}

function reorder(ids) {
  state.order = ids.filter((id) => state.views.has(id));
  tabbar.sync(state.order, state.active);
  persist();
}

async function rename(id, name) {
  try {
    const v = await api.rename(id, name);
    state.views.get(id)?.rename(v.name);
  } catch (err) {
    toast(err.message, true);
    throw err;
  }
}

// syncList refreshes the tabs whose stream is not connected (names, states).
async function syncList() {
  if (!state.views.size || document.hidden) return;
  try {
    const { sessions } = await api.list();
    for (const v of sessions || []) state.views.get(v.id)?.sync(v);
  } catch { /* the next round tries again */ }
}

function onGlobalKey(e) {
  if (document.querySelector('dialog[open]')) return;
  const mod = (e.ctrlKey || e.altKey) && !(e.ctrlKey && e.altKey) && !e.shiftKey && !e.metaKey;
  if (!mod) return;
  if (e.code === 'KeyT') {
    e.preventDefault();
    activate('new');
  } else if (e.code === 'KeyW') {
    e.preventDefault();
    if (state.active !== 'new') closeTab(state.active);
  } else if (/^Digit[1-9]$/.test(e.code)) {
    e.preventDefault();
    const n = Number(e.code.slice(5));
    const id = n === 9 ? state.order[state.order.length - 1] : state.order[n - 1];
    if (id) activate(id);
  }
}

async function main() {
  initTheme();
  initSettings();
  tabbar = new TabBar($('#tabs'), { onActivate: activate, onClose: closeTab, onReorder: reorder, onRename: rename });
  form = new NewSessionForm((v) => openSession(v.id));
  new Gauge().start();
  $('#new-tab').addEventListener('click', () => activate('new'));
  $('#sessions-btn').addEventListener('click', () => openSessions(openSession, state.order));
  $('#about-btn').addEventListener('click', () => openAbout(state.platform));
  document.addEventListener('keydown', onGlobalKey);

  try {
    state.platform = await api.platform();
  } catch (err) {
    toast(err.message, true);
  }
  if (state.platform.auth && state.platform.auth !== 'token') $('#set-logout').hidden = true;
  form.init(state.platform);

  const saved = loadTabs();
  for (const id of saved.ids) addView(id);
  state.order = saved.ids;
  activate(saved.active, false);
  setInterval(() => state.views.get(state.active)?.tick(), 1000);
  setInterval(syncList, 10000);
  document.addEventListener('visibilitychange', syncList);
  document.documentElement.dataset.ready = 'true';
}

main();
