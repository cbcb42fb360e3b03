// The conversation of one session, built from its events. Every event adds to
// the end or updates the block it belongs to (a streaming message, a tool
// card); nothing already shown is rebuilt. Agent text is Markdown made safe by
// render.js; user messages, thinking and tool output are plain text.
import { h, icon, iconButton, copyText, downloadText, safeFileName } from './util.js';
import { MarkdownView } from './render.js';
import { ToolCard } from './toolcard.js';

export class Transcript {
  constructor(el, sessionName) {
    this.el = el;
    this.sessionName = sessionName; // () => the session's name, for file names
    this.messages = new Map(); // messageId -> {el, view}
    this.thoughts = new Map(); // messageId -> {el, text node}
    this.tools = new Map(); // call id -> ToolCard
    this.open = new Set(); // streaming assistant blocks
  }

  add(node) {
    this.el.append(node);
    return node;
  }

  actions(getText, kind) {
    return h('div', { class: 'msg-actions' },
      iconButton('copy', `Copy ${kind}`, () => copyText(getText(), 'Message copied')),
      iconButton('download', `Download ${kind}`, () =>
        downloadText(`${safeFileName(this.sessionName())}-${kind}-${Date.now()}.md`, getText())));
  }

  user(d) {
    const text = String(d.content ?? '');
    this.add(h('article', { class: 'msg msg-user', 'aria-label': 'You', dataset: { messageId: String(d.messageId ?? '') } },
      h('div', { class: 'msg-body', text }),
      this.actions(() => text, 'message')));
  }

  assistant(id) {
    let m = this.messages.get(id);
    if (m) return m;
    const body = h('div', { class: 'msg-body markdown' });
    const view = new MarkdownView(body);
    const el = this.add(h('article', { class: 'msg msg-assistant', 'aria-label': 'Agent', dataset: { messageId: id } },
      body, this.actions(() => view.text, 'answer')));
    m = { el, view };
    this.messages.set(id, m);
    return m;
  }

  delta(d) {
    const id = String(d.messageId ?? '');
    const m = this.assistant(id);
    m.el.classList.add('streaming');
    // Screen readers read the answer once it is complete, not every token.
    m.el.setAttribute('aria-busy', 'true');
    this.open.add(id);
    m.view.append(String(d.text ?? ''));
  }

  message(d) {
    const id = String(d.messageId ?? '');
    const m = this.assistant(id);
    m.view.set(String(d.content ?? ''));
    m.el.classList.remove('streaming');
    m.el.removeAttribute('aria-busy');
    this.open.delete(id);
  }

  thought(id) {
    let t = this.thoughts.get(id);
    if (t) return t;
    const text = document.createTextNode('');
    const el = this.add(h('details', { class: 'thinking', dataset: { messageId: id } },
      h('summary', { text: 'Thinking…' }), h('div', { class: 'thinking-body' }, text)));
    t = { el, text };
    this.thoughts.set(id, t);
    return t;
  }

  thinkingDelta(d) {
    this.thought(String(d.messageId ?? '')).text.appendData(String(d.text ?? ''));
  }

  thinking(d) {
    const t = this.thought(String(d.messageId ?? ''));
    t.text.data = String(d.content ?? '');
    t.el.querySelector('summary').textContent = 'Thought';
  }

  toolCall(d) {
    const card = new ToolCard(d);
    this.tools.set(String(d.id), card);
    this.add(card.el);
  }

  toolResult(d) {
    let card = this.tools.get(String(d.id));
    if (!card) {
      card = new ToolCard({ id: d.id, name: d.name, input: {} });
      this.tools.set(String(d.id), card);
      this.add(card.el);
    }
    card.result(d);
  }

  error(d) {
    this.add(h('div', { class: 'msg msg-error', role: 'alert' }, icon('warn'), ' ', String(d.message ?? 'error')));
  }

  // notice adds a small note from the system (a pause, a resume); it
  // returns the note, which may be updated.
  notice(text, cls = '') {
    return this.add(h('div', { class: `msg-notice ${cls}`.trim(), role: 'note', text }));
  }

  // turnEnded closes whatever the turn left open: a cancelled answer keeps
  // the text it got, a tool call without a result is marked interrupted.
  turnEnded() {
    for (const id of this.open) {
      const m = this.messages.get(id);
      if (m) {
        m.view.flush();
        m.el.classList.remove('streaming');
        m.el.removeAttribute('aria-busy');
      }
    }
    this.open.clear();
    for (const card of this.tools.values()) card.interrupted();
  }
}
