// A session's terminals: a dock under the conversation with one tab per
// terminal, each a login shell in the session's sandbox on a pseudo-terminal
// (xterm.js, over the WebSocket GET /api/sessions/{id}/terminal; docs/api.md
// has its messages). A terminal whose connection ends says so and why; the
// dock opens a new one on request.
//
// The page's CSP has no 'unsafe-inline' styles, and xterm.js writes three
// <style> elements and, for 24-bit colours, style attributes on the spans of
// its rows, all through the global document. So the document's
// createElement gives <style> elements that feed constructable style sheets
// and spans that take colour styles, both through CSSOM, which the CSP
// allows (as it allows element.style: no script gains anything by it, and
// DOMPurify parses in documents of its own). Nothing else changes.
import { Terminal } from '../vendor/xterm/xterm.mjs';
import { FitAddon } from '../vendor/xterm-addon-fit/addon-fit.mjs';
import { h, icon, iconButton } from './util.js';

// A colour style xterm.js sets on a cell: color and background-color only.
const CELL_STYLE = /^(?:\s*(?:color|background-color)\s*:\s*(?:#[0-9a-fA-F]{3,8}|rgba?\([0-9.,\s%]+\))\s*;?)+$/;

const createElement = document.createElement.bind(document);

// styleShim is a stand-in for a <style> element: an inert element whose text
// becomes a constructable style sheet of the document, removed with it.
function styleShim() {
  const el = createElement('xterm-style');
  el.hidden = true;
  const sheet = new CSSStyleSheet();
  let text = '';
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  Object.defineProperty(el, 'textContent', {
    get: () => text,
    set: (v) => { text = String(v); sheet.replaceSync(text); },
  });
  const remove = el.remove.bind(el);
  el.remove = () => {
    remove();
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
  };
  return el;
}

// cellSpan is a span whose colour style goes through CSSOM.
function cellSpan() {
  const el = createElement('span');
  const set = el.setAttribute.bind(el);
  el.setAttribute = (name, value) => {
    if (String(name).toLowerCase() !== 'style') return set(name, value);
    if (CELL_STYLE.test(String(value))) el.style.cssText = String(value);
  };
  return el;
}

document.createElement = (tag, opts) => {
  switch (String(tag).toLowerCase()) {
    case 'style': return styleShim();
    case 'span': return cellSpan();
  }
  return createElement(tag, opts);
};

const THEME = {
  background: '#1b1d23', foreground: '#e6e6e6', cursor: '#e6e6e6', selectionBackground: '#3f4451',
};

const enc = new TextEncoder();

function terminalURL(id, cols, rows) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/api/sessions/${encodeURIComponent(id)}/terminal?cols=${cols}&rows=${rows}`;
}

// One terminal: its xterm, its WebSocket, its tab.
class Term {
  constructor(dock, n) {
    this.dock = dock;
    this.n = n;
    this.open = false;
    this.view = h('div', { class: 'term-view', role: 'tabpanel', 'aria-label': `Terminal ${n}`, dataset: { state: 'connecting' } });
    this.label = h('span', { class: 'term-tab-name', text: `Terminal ${n}` });
    const btn = h('button', { type: 'button', class: 'term-tab-main', role: 'tab', 'aria-selected': 'false', onclick: () => dock.select(this) }, icon('terminal'), this.label);
    const close = h('button', { type: 'button', class: 'term-tab-close', 'aria-label': `Close terminal ${n}`, title: 'Close this terminal (its shell ends)', onclick: () => dock.close(this) }, icon('x'));
    this.tab = h('div', { class: 'term-tab' }, btn, close);
    this.btn = btn;
    this.xterm = new Terminal({
      cursorBlink: true, scrollback: 5000, fontSize: 13, theme: THEME,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace',
    });
    this.fit = new FitAddon();
    this.xterm.loadAddon(this.fit);
  }

  // start shows the terminal, sizes it, then connects with that size.
  start() {
    this.xterm.open(this.view);
    this.resize();
    const { cols, rows } = this.xterm;
    const ws = new WebSocket(terminalURL(this.dock.id, cols, rows));
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => { this.setState('open'); this.open = true; };
    ws.onmessage = (e) => this.onMessage(e);
    ws.onclose = (e) => this.onClose(e);
    this.xterm.onData((d) => this.send(enc.encode(d)));
    this.xterm.onBinary((d) => this.send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 255)));
    this.xterm.onResize(({ cols, rows }) => {
      if (this.open) this.ws.send(JSON.stringify({ type: 'resize', cols, rows }));
    });
    new ResizeObserver(() => this.resize()).observe(this.view);
  }

  send(bytes) {
    if (this.open && this.ws.readyState === WebSocket.OPEN) this.ws.send(bytes);
  }

  resize() {
    if (this.view.offsetParent === null) return; // hidden: measure when shown
    try { this.fit.fit(); } catch { /* not rendered yet */ }
    this.view.dataset.size = `${this.xterm.cols}x${this.xterm.rows}`;
  }

  onMessage(e) {
    if (typeof e.data !== 'string') {
      this.xterm.write(new Uint8Array(e.data));
      return;
    }
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    if (m.type === 'exit') {
      this.ended = m.signal ? `the shell was killed (${m.signal})` : `the shell exited with code ${m.exitCode ?? 0}`;
    } else if (m.type === 'closed') {
      this.ended = `the terminal was closed: ${m.reason || 'by the server'}`;
    }
  }

  onClose(e) {
    this.open = false;
    let why = this.ended;
    if (!why) {
      why = e.code === 1006 && this.state === 'connecting'
        ? 'the terminal could not be opened (is the session running?)'
        : `the connection was lost${e.reason ? `: ${e.reason}` : ''}`;
    }
    this.setState('closed');
    this.label.textContent = `Terminal ${this.n} (closed)`;
    this.xterm.write(`\r\n\x1b[2m[${why}. Open a new terminal to go on.]\x1b[0m\r\n`);
    this.view.dataset.closedReason = why;
  }

  setState(s) {
    this.state = s;
    this.view.dataset.state = s;
    this.tab.classList.toggle('closed', s === 'closed');
  }

  focus() { this.xterm.focus(); }

  dispose() {
    this.open = false;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    this.xterm.dispose();
    this.view.remove();
    this.tab.remove();
  }
}

// TerminalDock is a session's terminals, shown under its conversation.
export class TerminalDock {
  constructor(id) {
    this.id = id;
    this.terms = [];
    this.count = 0;
    this.active = null;
    this.tabs = h('div', { class: 'term-tabs', role: 'tablist', 'aria-label': 'Terminals' });
    this.newBtn = iconButton('plus', 'New terminal', () => this.add(), 'btn ghost icon-only small term-new');
    this.hideBtn = iconButton('x', 'Hide the terminals (they keep running)', () => this.toggle(false), 'btn ghost icon-only small');
    this.body = h('div', { class: 'term-body' });
    this.el = h('section', { class: 'term-dock', 'aria-label': 'Terminals', hidden: true },
      h('div', { class: 'term-bar' }, this.tabs, this.newBtn, h('span', { class: 'grow' }), this.hideBtn), this.body);
    this.button = h('button', { type: 'button', class: 'btn ghost small open-terminal', 'aria-label': 'Terminal', title: 'A shell in the session\'s sandbox', 'aria-pressed': 'false', onclick: () => this.toggle() },
      icon('terminal'), h('span', { class: 'label', text: 'Terminal' }));
  }

  // toggle shows or hides the dock; shown for the first time, it opens a terminal.
  toggle(show = this.el.hidden) {
    this.el.hidden = !show;
    this.button.setAttribute('aria-pressed', String(show));
    if (!show) return;
    if (!this.terms.length && this.usable) this.add();
    else if (this.active) { this.active.resize(); this.active.focus(); }
  }

  // setUsable: terminals open only while the sandbox runs.
  setUsable(ok) {
    this.usable = ok;
    this.newBtn.disabled = !ok;
    this.button.disabled = !ok && !this.terms.length;
  }

  add() {
    if (!this.usable) return;
    const t = new Term(this, ++this.count);
    this.terms.push(t);
    this.tabs.append(t.tab);
    this.body.append(t.view);
    this.select(t);
    t.start();
    t.focus();
  }

  select(t) {
    this.active = t;
    for (const o of this.terms) {
      const on = o === t;
      o.view.hidden = !on;
      o.tab.classList.toggle('active', on);
      o.btn.setAttribute('aria-selected', String(on));
    }
    t.resize();
    t.focus();
  }

  close(t) {
    t.dispose();
    this.terms = this.terms.filter((o) => o !== t);
    if (this.active === t) this.active = null;
    if (this.terms.length) this.select(this.terms[this.terms.length - 1]);
    else this.toggle(false);
  }

  destroy() {
    for (const t of this.terms) t.dispose();
    this.terms = [];
  }
}
