// Syntax highlighting: highlight.js core with the grammars vendored in
// web/static/vendor/highlight (scripts/vendor-web.sh lists the same ones), and
// a small JSON pretty-printer that builds its spans directly.
import hljs from '../vendor/highlight/core.min.js';
import DOMPurify from '../vendor/dompurify/purify.es.mjs';
import bash from '../vendor/highlight/languages/bash.min.js';
import c from '../vendor/highlight/languages/c.min.js';
import cpp from '../vendor/highlight/languages/cpp.min.js';
import css from '../vendor/highlight/languages/css.min.js';
import diff from '../vendor/highlight/languages/diff.min.js';
import dockerfile from '../vendor/highlight/languages/dockerfile.min.js';
import go from '../vendor/highlight/languages/go.min.js';
import ini from '../vendor/highlight/languages/ini.min.js';
import java from '../vendor/highlight/languages/java.min.js';
import javascript from '../vendor/highlight/languages/javascript.min.js';
import json from '../vendor/highlight/languages/json.min.js';
import makefile from '../vendor/highlight/languages/makefile.min.js';
import markdown from '../vendor/highlight/languages/markdown.min.js';
import plaintext from '../vendor/highlight/languages/plaintext.min.js';
import python from '../vendor/highlight/languages/python.min.js';
import rust from '../vendor/highlight/languages/rust.min.js';
import shell from '../vendor/highlight/languages/shell.min.js';
import sql from '../vendor/highlight/languages/sql.min.js';
import typescript from '../vendor/highlight/languages/typescript.min.js';
import xml from '../vendor/highlight/languages/xml.min.js';
import yaml from '../vendor/highlight/languages/yaml.min.js';

const grammars = {
  bash,
  c,
  cpp,
  css,
  diff,
  dockerfile,
  go,
  ini,
  java,
  javascript,
  json,
  makefile,
  markdown,
  plaintext,
  python,
  rust,
  shell,
  sql,
  typescript,
  xml,
  yaml,
};
for (const [name, g] of Object.entries(grammars)) hljs.registerLanguage(name, g);
hljs.configure({ ignoreUnescapedHTML: true });

// highlight.js returns HTML; it escapes the code itself, and this instance
// of DOMPurify lets nothing through but its <span class>, as a second guard.
const spansOnly = DOMPurify(window);
const SPANS = { ALLOWED_TAGS: ['span'], ALLOWED_ATTR: ['class'], RETURN_DOM_FRAGMENT: true };

export function knownLanguage(lang) {
  return Boolean(lang && hljs.getLanguage(lang));
}

// highlightInto fills code with text, highlighted when the language is known.
export function highlightInto(code, text, lang) {
  if (knownLanguage(lang) && text.length < 200000) {
    try {
      const html = hljs.highlight(text, { language: lang, ignoreIllegals: true }).value;
      code.replaceChildren(spansOnly.sanitize(html, SPANS));
      code.classList.add('hljs');
      return true;
    } catch {
      // fall through to plain text
    }
  }
  code.textContent = text;
  return false;
}

function span(cls, text) {
  const s = document.createElement('span');
  s.className = cls;
  s.textContent = text;
  return s;
}

function jsonInto(out, v, indent) {
  const pad = '  '.repeat(indent + 1), end = '  '.repeat(indent);
  if (v === null || typeof v === 'boolean') out.append(span('json-literal', String(v)));
  else if (typeof v === 'number') out.append(span('json-number', String(v)));
  else if (typeof v === 'string') out.append(span('json-string', JSON.stringify(v)));
  else if (Array.isArray(v)) {
    if (!v.length) { out.append(span('json-punct', '[]')); return; }
    out.append(span('json-punct', '['), '\n');
    v.forEach((item, i) => {
      out.append(pad);
      jsonInto(out, item, indent + 1);
      out.append(i < v.length - 1 ? span('json-punct', ',') : '', '\n');
    });
    out.append(end, span('json-punct', ']'));
  } else if (typeof v === 'object') {
    const keys = Object.keys(v);
    if (!keys.length) { out.append(span('json-punct', '{}')); return; }
    out.append(span('json-punct', '{'), '\n');
    keys.forEach((k, i) => {
      out.append(pad, span('json-key', JSON.stringify(k)), span('json-punct', ': '));
      jsonInto(out, v[k], indent + 1);
      out.append(i < keys.length - 1 ? span('json-punct', ',') : '', '\n');
    });
    out.append(end, span('json-punct', '}'));
  } else {
    out.append(String(v));
  }
}

// jsonFragment pretty-prints a value with highlighted keys, strings and numbers.
export function jsonFragment(value) {
  const out = document.createDocumentFragment();
  jsonInto(out, value, 0);
  return out;
}
