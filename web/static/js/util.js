// Small DOM and formatting helpers shared by the other modules. Nothing here
// parses HTML: elements are built with createElement and text goes in as
// text nodes.

const SVG_NS = 'http://www.w3.org/2000/svg';

// h builds an element. attrs: class, text, dataset, on{Event} handlers,
// aria-* and other attributes (set with setAttribute, never "style"). Children
// are nodes or strings (as text) and may be nested arrays; null is skipped.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === 'style') throw new Error('no inline styles');
    else if (k === 'hidden' || k === 'disabled' || k === 'checked' || k === 'open') el[k] = Boolean(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// icon makes an <svg> that uses one of the symbols in index.html.
export function icon(name, cls = 'icon') {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('class', cls);
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const use = document.createElementNS(SVG_NS, 'use');
  use.setAttribute('href', '#i-' + name);
  svg.append(use);
  return svg;
}

// iconButton is a button with an icon and an accessible name.
export function iconButton(name, label, onClick, cls = 'btn ghost icon-only') {
  return h('button', { type: 'button', class: cls, 'aria-label': label, title: label, onclick: onClick }, icon(name));
}

export function $(sel, root = document) { return root.querySelector(sel); }

export function fmtDuration(sec) {
  sec = Math.max(0, Math.floor(sec));
  const d = Math.floor(sec / 86400), hh = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${String(m).padStart(2, '0')}m`;
  if (m) return `${m}m ${String(s).padStart(2, '0')}s`;
  return `${s}s`;
}

export function fmtMs(ms) {
  if (ms < 1000) return `${ms} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
}

export function fmtTokens(n) {
  n = Number(n) || 0;
  if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (n >= 1e4) return Math.round(n / 1e3) + 'k';
  if (n >= 1e3) return (n / 1e3).toFixed(1) + 'k';
  return String(n);
}

export function fmtCost(usd) {
  usd = Number(usd) || 0;
  if (usd === 0) return '$0';
  if (usd < 0.01) return '$' + usd.toFixed(4);
  return '$' + usd.toFixed(2);
}

export function fmtMiB(mib) {
  mib = Number(mib) || 0;
  return mib >= 1024 ? (mib / 1024).toFixed(1) + ' GiB' : Math.round(mib) + ' MiB';
}

export function fmtTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? '' : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export function debounce(fn, ms) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

// copyText puts text on the clipboard and says so.
export async function copyText(text, what = 'Copied') {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API refused (insecure context, no permission): the old way.
    const ta = h('textarea', { class: 'sr-only', 'aria-hidden': 'true' });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    try { document.execCommand('copy'); } catch { /* nothing more to try */ }
    ta.remove();
  }
  toast(what);
}

// downloadText saves text as a file through a blob URL.
export function downloadText(filename, text, type = 'text/markdown') {
  const url = URL.createObjectURL(new Blob([text], { type: type + ';charset=utf-8' }));
  const a = h('a', { href: url, download: filename, class: 'sr-only' });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function safeFileName(s) {
  return String(s || 'session').replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 80) || 'session';
}

export function toast(text, bad = false) {
  const box = document.getElementById('toasts');
  if (!box) return;
  const t = h('div', { class: bad ? 'toast bad' : 'toast', role: bad ? 'alert' : 'status' }, text);
  box.append(t);
  setTimeout(() => t.remove(), bad ? 6000 : 2200);
}

// announce reads a short status to screen readers.
export function announce(text) {
  const live = document.getElementById('live');
  if (!live) return;
  live.textContent = '';
  setTimeout(() => { live.textContent = text; }, 30);
}

const adjectives = ['amber', 'brisk', 'calm', 'deft', 'eager', 'fleet', 'gentle', 'hardy', 'keen', 'lucid', 'mellow', 'nimble', 'plucky', 'quiet', 'rapid', 'sunny', 'tidy', 'vivid', 'witty', 'zesty'];
const nouns = ['otter', 'falcon', 'badger', 'heron', 'lynx', 'marten', 'osprey', 'panda', 'quokka', 'raven', 'stoat', 'tapir', 'walrus', 'yak', 'finch', 'gecko', 'ibis', 'koala', 'lemur', 'newt'];

export function randomName() {
  const pick = (list) => list[crypto.getRandomValues(new Uint32Array(1))[0] % list.length];
  return `${pick(adjectives)}-${pick(nouns)}`;
}

export const ENDED = new Set(['stopped', 'error']);
export const STATE_LABEL = {
  creating: 'Creating', booting: 'Starting sandbox', active: 'Ready', busy: 'Working',
  pausing: 'Pausing', paused: 'Paused', resuming: 'Resuming',
  stopping: 'Stopping', stopped: 'Ended', error: 'Failed',
};

export const PROVIDER_NAMES = { anthropic: 'Anthropic', openai: 'OpenAI', openrouter: 'OpenRouter', 'openai-compatible': 'OpenAI-compatible' };
