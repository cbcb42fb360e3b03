// A tool call and its result as a collapsible card: an icon for the tool, a
// one-line summary, running/ok/error state, the input as highlighted JSON and
// the output as terminal text (ANSI colours) or a coloured diff, with copy and
// download buttons. Output is only ever text nodes and spans.
import { h, icon, iconButton, copyText, downloadText, fmtMs } from './util.js';
import { jsonFragment } from './hl.js';
import { ansiFragment, hasANSI, looksLikeDiff, diffFragment, editDiff } from './ansi.js';

const ICONS = { bash: 'terminal', read_file: 'file', write_file: 'file-plus', edit_file: 'edit', list_files: 'folder' };

function brief(name, input) {
  if (!input || typeof input !== 'object') return '';
  if (name === 'bash' && typeof input.command === 'string') return input.command.split('\n')[0];
  if (typeof input.path === 'string') return input.path;
  const first = Object.values(input).find((v) => typeof v === 'string');
  return first ? first.split('\n')[0] : '';
}

export class ToolCard {
  constructor(call) {
    this.id = call.id;
    this.name = String(call.name || 'tool');
    this.input = call.input;
    this.output = '';
    this.stateEl = h('span', { class: 'tool-state', text: 'running' });
    this.metaEl = h('span', { class: 'tool-meta' });
    const summary = h('summary', {},
      h('span', { class: 'tool-icon' }, icon(ICONS[this.name] || 'tool')),
      h('span', { class: 'tool-name', text: this.name }),
      h('span', { class: 'tool-brief', text: brief(this.name, this.input), title: brief(this.name, this.input) }),
      this.metaEl, this.stateEl);
    this.body = h('div', { class: 'tool-body' }, this.inputSection());
    this.el = h('details', { class: 'tool running', open: true, dataset: { toolId: this.id } }, summary, this.body);
  }

  inputSection() {
    const raw = JSON.stringify(this.input ?? {}, null, 2);
    const head = h('div', { class: 'tool-section-head' }, h('span', { class: 'grow', text: this.name === 'edit_file' ? 'Change' : 'JSON' }),
      iconButton('copy', 'Copy input', () => copyText(raw, 'Input copied')));
    const parts = [head];
    if (this.name === 'edit_file' && this.input && typeof this.input.old_string === 'string') {
      parts.push(h('pre', { class: 'tool-output diff' }, editDiff(this.input.old_string, String(this.input.new_string ?? ''))));
    }
    parts.push(h('pre', { class: 'json' }, jsonFragment(this.input ?? {})));
    // The command is already in the summary line, so bash input starts closed.
    return h('details', { class: 'tool-input', open: this.name !== 'bash' && this.name !== 'read_file' && this.name !== 'list_files' },
      h('summary', { text: 'Input' }), ...parts);
  }

  // result fills in what the tool returned.
  result(r) {
    this.output = String(r.output ?? '');
    const failed = Boolean(r.isError) || (typeof r.exitCode === 'number' && r.exitCode !== 0);
    this.el.classList.remove('running');
    this.el.classList.add(failed ? 'error' : 'ok');
    this.stateEl.textContent = r.isError ? 'error' : (failed ? `exit ${r.exitCode}` : 'ok');
    const meta = [];
    if (typeof r.exitCode === 'number' && !failed) meta.push(`exit ${r.exitCode}`);
    if (typeof r.durationMs === 'number') meta.push(fmtMs(r.durationMs));
    this.metaEl.textContent = meta.join(' · ');

    const file = `${this.name}-${this.id}.txt`.replace(/[^A-Za-z0-9._-]+/g, '-');
    const head = h('div', { class: 'tool-section-head' }, h('span', { class: 'grow', text: r.isError ? 'Error' : 'Output' }),
      iconButton('copy', 'Copy output', () => copyText(this.output, 'Output copied')),
      iconButton('download', 'Download output', () => downloadText(file, this.output, 'text/plain')));
    let pre;
    if (!this.output) pre = h('pre', { class: 'tool-output empty', text: '(no output)' });
    else if (!hasANSI(this.output) && looksLikeDiff(this.output)) pre = h('pre', { class: 'tool-output diff' }, diffFragment(this.output));
    else pre = h('pre', { class: 'tool-output' }, ansiFragment(this.output));
    const section = h('div', { class: 'tool-result' }, head, pre);
    if (r.truncated) section.append(h('div', { class: 'tool-note', text: 'The output was cut in the middle; the model saw the same.' }));
    this.body.querySelector('.tool-result')?.remove();
    this.body.append(section);
  }

  // interrupted marks a call that never got a result (the turn was stopped).
  interrupted() {
    if (!this.el.classList.contains('running')) return;
    this.el.classList.remove('running');
    this.el.classList.add('error');
    this.stateEl.textContent = 'interrupted';
  }
}
