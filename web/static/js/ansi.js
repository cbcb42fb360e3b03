// Terminal output as DOM: ANSI SGR colour and style codes become spans with
// classes (256-colour and true-colour values set element.style from script,
// which the CSP allows), every other escape or control sequence is dropped,
// and the text itself only ever goes in as text nodes. Unified diffs get line
// colours instead.

// ESC [ params intermediates final | OSC … BEL/ST | DCS/PM/APC … ST | ESC x | other C0 controls.
const ESCAPES = /\x1b\[([0-?]*)[ -/]*([@-~])|\x1b\][\s\S]*?(?:\x07|\x1b\\|$)|\x1b[P^_][\s\S]*?(?:\x1b\\|$)|\x1b[ -/]*[0-~]?|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g;

function fresh() {
  return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false, hidden: false, strike: false };
}

const CUBE = [0, 95, 135, 175, 215, 255];

// colour256 maps a 256-colour index to a class index (0–15) or an rgb() value.
function colour256(n) {
  if (!(n >= 0 && n <= 255)) return null;
  if (n < 16) return n;
  if (n < 232) {
    n -= 16;
    return `rgb(${CUBE[Math.floor(n / 36)]}, ${CUBE[Math.floor(n / 6) % 6]}, ${CUBE[n % 6]})`;
  }
  const g = 8 + (n - 232) * 10;
  return `rgb(${g}, ${g}, ${g})`;
}

// extended reads "5;n" or "2;r;g;b" after 38/48; it returns the colour and
// how many parameters it used.
function extended(ps, i) {
  if (ps[i] === 5) return [colour256(ps[i + 1]), 2];
  if (ps[i] === 2) {
    const [r, g, b] = [ps[i + 1], ps[i + 2], ps[i + 3]].map((v) => Math.min(255, Math.max(0, v | 0)));
    return [`rgb(${r}, ${g}, ${b})`, 4];
  }
  return [null, 0];
}

export function applySGR(st, params) {
  const ps = params === '' ? [0] : params.split(/[;:]/).map((p) => (p === '' ? 0 : Number(p)));
  st = { ...st };
  for (let i = 0; i < ps.length; i++) {
    const p = ps[i];
    if (p === 0) st = fresh();
    else if (p === 1) st.bold = true;
    else if (p === 2) st.dim = true;
    else if (p === 3) st.italic = true;
    else if (p === 4) st.underline = true;
    else if (p === 7) st.inverse = true;
    else if (p === 8) st.hidden = true;
    else if (p === 9) st.strike = true;
    else if (p === 21 || p === 22) { st.bold = false; st.dim = false; }
    else if (p === 23) st.italic = false;
    else if (p === 24) st.underline = false;
    else if (p === 27) st.inverse = false;
    else if (p === 28) st.hidden = false;
    else if (p === 29) st.strike = false;
    else if (p >= 30 && p <= 37) st.fg = p - 30;
    else if (p >= 90 && p <= 97) st.fg = p - 90 + 8;
    else if (p === 39) st.fg = null;
    else if (p >= 40 && p <= 47) st.bg = p - 40;
    else if (p >= 100 && p <= 107) st.bg = p - 100 + 8;
    else if (p === 49) st.bg = null;
    else if (p === 38 || p === 48) {
      const [c, used] = extended(ps, i + 1);
      if (p === 38) st.fg = c; else st.bg = c;
      i += used;
    }
  }
  return st;
}

function styled(st) {
  return st.fg !== null || st.bg !== null || st.bold || st.dim || st.italic || st.underline || st.inverse || st.hidden || st.strike;
}

function emit(out, text, st) {
  if (!text) return;
  if (!styled(st)) {
    out.append(document.createTextNode(text));
    return;
  }
  let fg = st.fg, bg = st.bg;
  if (st.inverse) [fg, bg] = [bg === null ? 0 : bg, fg === null ? 7 : fg];
  const span = document.createElement('span');
  const cls = [];
  if (st.bold) cls.push('ansi-bold');
  if (st.dim) cls.push('ansi-dim');
  if (st.italic) cls.push('ansi-italic');
  if (st.underline) cls.push('ansi-underline');
  if (st.strike) cls.push('ansi-strike');
  if (st.hidden) cls.push('ansi-hidden');
  if (typeof fg === 'number') cls.push('ansi-fg-' + fg);
  else if (typeof fg === 'string') span.style.color = fg;
  if (typeof bg === 'number') cls.push('ansi-bg-' + bg);
  else if (typeof bg === 'string') span.style.backgroundColor = bg;
  span.className = cls.join(' ');
  span.textContent = text;
  out.append(span);
}

// collapseCR keeps what a terminal would show of lines redrawn with \r
// (progress bars): the last non-empty redraw.
export function collapseCR(text) {
  if (!text.includes('\r')) return text;
  return text.split('\n').map((line) => {
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (!line.includes('\r')) return line;
    const parts = line.split('\r').filter((p) => p !== '');
    return parts.length ? parts[parts.length - 1] : '';
  }).join('\n');
}

export function hasANSI(text) {
  return text.includes('\x1b[');
}

// ansiFragment renders terminal output.
export function ansiFragment(text) {
  const out = document.createDocumentFragment();
  text = collapseCR(String(text));
  let st = fresh();
  let last = 0;
  ESCAPES.lastIndex = 0;
  for (let m = ESCAPES.exec(text); m; m = ESCAPES.exec(text)) {
    if (m[0] === '') { ESCAPES.lastIndex++; continue; }
    emit(out, text.slice(last, m.index), st);
    last = ESCAPES.lastIndex;
    if (m[2] === 'm' && m[0].startsWith('\x1b[') && /^[0-9;:]*$/.test(m[1])) st = applySGR(st, m[1]);
  }
  emit(out, text.slice(last), st);
  return out;
}

// looksLikeDiff is true for unified diffs (git diff, diff -u).
export function looksLikeDiff(text) {
  return /^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@/m.test(text) && (/^--- /m.test(text) || /^diff /m.test(text));
}

export function diffFragment(text) {
  const out = document.createDocumentFragment();
  for (const line of String(text).split('\n')) {
    let cls = 'dl';
    if (/^(diff |index |--- |\+\+\+ |new file|deleted file|similarity|rename )/.test(line)) cls += ' diff-meta';
    else if (line.startsWith('@@')) cls += ' diff-hunk';
    else if (line.startsWith('+')) cls += ' diff-add';
    else if (line.startsWith('-')) cls += ' diff-del';
    // One block per line, so line backgrounds span the width.
    const span = document.createElement('span');
    span.className = cls;
    span.textContent = line;
    out.append(span);
  }
  return out;
}

// editDiff shows an exact-string edit (edit_file's input) as removed and added lines.
export function editDiff(oldText, newText) {
  const lines = [];
  for (const l of String(oldText).split('\n')) lines.push('-' + l);
  for (const l of String(newText).split('\n')) lines.push('+' + l);
  return diffFragment(lines.join('\n'));
}
