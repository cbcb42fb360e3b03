// Markdown from the agent, made safe: marked parses it (raw HTML in it is
// shown as text, not markup), DOMPurify cleans the result with a strict
// allow-list and hands back DOM nodes (never an HTML string for innerHTML),
// links open in a new tab without an opener or referrer, and code blocks get
// a language label, highlighting and a copy button.
import { Marked } from '../vendor/marked/marked.esm.js';
import DOMPurify from '../vendor/dompurify/purify.es.mjs';
import { highlightInto } from './hl.js';
import { h, icon, copyText } from './util.js';

function escapeHTML(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

const md = new Marked({ gfm: true, breaks: false });
md.use({
  renderer: {
    // Block and inline HTML in Markdown is displayed literally.
    html(token) { return escapeHTML(token.text); },
  },
});

const purify = DOMPurify(window);
const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'link', 'meta', 'base', 'form', 'input', 'button', 'textarea', 'select', 'option',
    'iframe', 'frame', 'frameset', 'object', 'embed', 'applet', 'video', 'audio', 'source', 'track', 'picture',
    'svg', 'math', 'template', 'dialog', 'noscript', 'marquee'],
  FORBID_ATTR: ['style', 'id', 'name', 'srcset', 'formaction', 'action', 'background', 'ping', 'target', 'xmlns', 'is'],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
  SANITIZE_DOM: true,
  RETURN_DOM_FRAGMENT: true,
};
const SAFE_IMAGE = /^data:image\/(?:png|gif|jpeg|webp);base64,[a-z0-9+/=\s]+$/i;

purify.addHook('afterSanitizeAttributes', (node) => {
  if (node.hasAttribute('class')) {
    // Only marked's code-language class; the page's own classes are not for agents to use.
    const lang = /^language-[\w#+.-]{1,40}$/.exec(node.getAttribute('class') || '');
    if (lang && node.tagName === 'CODE') node.setAttribute('class', lang[0]);
    else node.removeAttribute('class');
  }
  if (node.tagName === 'A') {
    if (node.hasAttribute('href')) {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer nofollow');
    }
  }
  if (node.tagName === 'IMG') {
    const src = node.getAttribute('src') || '';
    if (!SAFE_IMAGE.test(src)) {
      // Remote images would leak that the page was read (and the CSP blocks them anyway).
      node.removeAttribute('src');
      node.setAttribute('alt', '[image: ' + (node.getAttribute('alt') || 'not shown') + ']');
    }
  }
});

// sanitize turns an HTML string from marked into a safe fragment.
export function sanitize(html) {
  return purify.sanitize(html, PURIFY);
}

// decorateCode wraps each <pre><code> of root with a header (language and a
// copy button) and highlights it.
export function decorateCode(root) {
  for (const pre of root.querySelectorAll('pre')) {
    const code = pre.querySelector('code');
    if (!code || pre.parentElement?.classList.contains('codeblock')) continue;
    const m = /language-([\w#+.-]+)/.exec(code.className || '');
    const lang = m ? m[1].toLowerCase() : '';
    const text = code.textContent.replace(/\n$/, '');
    highlightInto(code, text, lang);
    const copy = h('button', { type: 'button', class: 'btn ghost small', 'aria-label': 'Copy code', onclick: () => copyText(text, 'Code copied') },
      icon('copy'), 'Copy');
    const box = h('div', { class: 'codeblock' },
      h('div', { class: 'codeblock-head' }, h('span', { class: 'codeblock-lang', text: lang || 'text' }), copy));
    pre.replaceWith(box);
    box.append(pre);
  }
}

function parseTokens(tokens, links) {
  const list = [...tokens];
  list.links = links;
  const frag = sanitize(md.parser(list));
  decorateCode(frag);
  return frag;
}

// renderMarkdown renders a whole text at once.
export function renderMarkdown(text) {
  const tokens = md.lexer(String(text));
  return parseTokens(tokens, tokens.links);
}

// MarkdownView renders text that grows (a streaming answer) into el. Each
// top-level block is its own chunk; on every (throttled) render only the
// chunks from the first that changed onwards are rebuilt, which is normally
// just the last one. Earlier messages are never touched.
export class MarkdownView {
  constructor(el, throttleMs = 60) {
    this.el = el;
    this.src = '';
    this.chunks = [];
    this.throttleMs = throttleMs;
    this.timer = null;
  }

  append(text) {
    this.src += text;
    if (!this.timer) this.timer = setTimeout(() => { this.timer = null; this.render(); }, this.throttleMs);
  }

  // set replaces the text (the complete message) and renders now.
  set(text) {
    const changed = text !== this.src;
    this.src = text;
    this.flush(changed);
  }

  flush(full = false) {
    clearTimeout(this.timer);
    this.timer = null;
    this.render(full);
  }

  render(full = false) {
    const tokens = md.lexer(this.src);
    const hasLinks = tokens.links && Object.keys(tokens.links).length > 0;
    let keep = 0;
    if (!full && !hasLinks) {
      while (keep < this.chunks.length && keep < tokens.length - 1 && this.chunks[keep].raw === tokens[keep].raw) keep++;
    }
    for (const c of this.chunks.splice(keep)) c.node.remove();
    for (let i = keep; i < tokens.length; i++) {
      const node = h('div', { class: 'md-chunk' });
      node.append(parseTokens([tokens[i]], tokens.links));
      this.el.append(node);
      this.chunks.push({ raw: tokens[i].raw, node });
    }
  }

  get text() { return this.src; }
}
