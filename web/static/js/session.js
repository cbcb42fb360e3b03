// One session's panel: header, transcript, "working" indicator, composer
// and status bar, fed by its event stream. It stays in the page while its tab
// is open (hidden when another tab is shown), so a session keeps streaming in
// the background.
import { api } from './api.js';
import { h, icon, iconButton, fmtDuration, fmtTokens, fmtCost, toast, announce, ENDED, STATE_LABEL } from './util.js';
import { SessionStream } from './stream.js';
import { Transcript } from './transcript.js';
import { loadEnterSends } from './prefs.js';
import { confirmDialog, openEmail, openExeDev } from './dialogs.js';

const WORD = 'Working…';

export class SessionView {
  // app: { pool, platform, onChange(view), onRename(id), onCloseTab(id) }
  constructor(id, app) {
    this.id = id;
    this.app = app;
    this.info = { id, name: '…', state: 'creating', provider: '', model: '', isolated: true, usage: {} };
    this.state = 'creating';
    this.busy = false;
    this.endedAtOpen = false;
    this.uptimeBase = 0;
    this.uptimeAt = performance.now();
    this.stick = true;
    this.boot = null;
    this.busySince = 0;
    this.stream = new SessionStream(id, (type, data) => this.onEvent(type, data), (c) => this.onConn(c));
    this.build();
    this.transcript = new Transcript(this.log, () => this.info.name);
  }

  build() {
    const id = this.id;
    this.titleEl = h('h2', { class: 's-title' });
    this.modelEl = h('span', { class: 's-model' });
    this.badges = h('span', { class: 'badges' });
    this.emailBtn = h('button', { type: 'button', class: 'btn ghost small', 'aria-label': 'Email the transcript', title: 'Email the transcript', hidden: true, onclick: () => openEmail(this) }, icon('mail'), h('span', { class: 'label', text: 'Email' }));
    this.exedevBtn = h('button', { type: 'button', class: 'btn ghost small', 'aria-label': 'Send to a new exe.dev VM', title: 'Send to a new exe.dev VM', hidden: true, onclick: () => openExeDev(this) }, icon('rocket'), h('span', { class: 'label', text: 'Send to exe.dev' }));
    this.endBtn = h('button', { type: 'button', class: 'btn ghost small end-session', 'aria-label': 'End session', title: 'End the session and delete its sandbox', onclick: () => this.end() }, icon('power'), h('span', { class: 'label', text: 'End session' }));
    const head = h('header', { class: 's-head' }, this.titleEl, this.modelEl, this.badges,
      h('div', { class: 's-actions' },
        h('button', { type: 'button', class: 'btn ghost small', 'aria-label': 'Rename', title: 'Rename (F2 on the tab)', onclick: () => this.app.onRename(id) }, icon('edit'), h('span', { class: 'label', text: 'Rename' })),
        h('a', { class: 'btn ghost small download-transcript', href: api.transcriptURL(id, 'md'), download: '', 'aria-label': 'Download the conversation as Markdown', title: 'Download the conversation as Markdown' }, icon('download'), h('span', { class: 'label', text: 'Download' })),
        this.emailBtn, this.exedevBtn, this.endBtn));

    this.log = h('div', { class: 'transcript', role: 'log', 'aria-label': 'Conversation' });
    this.scroller = h('div', { class: 'scroller', tabindex: '0', 'aria-label': 'Conversation' }, this.log);
    this.scroller.addEventListener('scroll', () => {
      const s = this.scroller;
      this.stick = s.scrollHeight - s.scrollTop - s.clientHeight < 80;
    }, { passive: true });
    new ResizeObserver(() => { if (this.stick) this.scrollDown(); }).observe(this.log);

    this.elapsedEl = h('span', { class: 'working-elapsed' });
    this.stopBtn = h('button', { type: 'button', class: 'btn stop small', onclick: () => this.stop() }, icon('stop'), 'Stop');
    this.working = h('div', { class: 'working', role: 'status', hidden: true },
      h('span', { class: 'working-word', 'aria-hidden': 'true' }, [...WORD].map((c) => h('span', { text: c }))),
      h('span', { class: 'sr-only', text: 'The agent is working' }), this.elapsedEl, this.stopBtn);

    this.input = h('textarea', { id: `input-${id}`, rows: '1', placeholder: 'Message the agent…', 'aria-describedby': `hint-${id}` });
    this.input.addEventListener('input', () => this.grow());
    this.input.addEventListener('keydown', (e) => this.onKey(e));
    this.sendBtn = h('button', { type: 'submit', class: 'btn primary send' }, icon('send'), 'Send');
    this.composer = h('form', { class: 'composer', onsubmit: (e) => { e.preventDefault(); this.send(); } },
      h('div', { class: 'composer-inner' },
        h('label', { class: 'sr-only', for: `input-${id}`, text: 'Message' }), this.input, this.sendBtn),
      h('p', { class: 'hint', id: `hint-${id}`, text: 'Ctrl+Enter (⌘+Enter) sends.' }));

    this.endedBanner = h('div', { class: 'ended-banner', role: 'status', hidden: true });

    this.stateEl = h('span', { class: 'st-text' });
    this.dotEl = h('span', { class: 'dot' });
    this.uptimeEl = h('span', { class: 'st-uptime', title: 'Uptime' });
    this.usageEl = h('span', { class: 'st-usage', title: 'Tokens in / out and cost so far' });
    this.connEl = h('span', { class: 'st-conn' });
    this.statusModel = h('span', { class: 'st-model' });
    const bar = h('footer', { class: 'statusbar' },
      h('span', { class: 'st-state' }, this.dotEl, this.stateEl), this.uptimeEl, this.usageEl,
      h('span', { class: 'grow' }), this.connEl, this.statusModel);

    this.el = h('section', { class: 'session', id: `panel-${id}`, role: 'tabpanel', 'aria-labelledby': `tab-${id}`, hidden: true, dataset: { sessionId: id } },
      head, this.scroller, this.working, this.endedBanner, this.composer, bar);
  }

  // load fetches the session and starts its stream.
  async load() {
    try {
      this.setInfo(await api.status(this.id));
    } catch (err) {
      if (err.status === 404) {
        this.gone();
        return;
      }
      toast(`Could not load the session: ${err.message}`, true);
    }
    this.endedAtOpen = ENDED.has(this.state);
    this.loaded = true;
    // Hidden tabs connect when they are first shown.
    if (this.active) this.app.pool.use(this.stream);
  }

  setInfo(v) {
    this.info = { ...this.info, ...v };
    this.uptimeBase = Number(v.uptime) || 0;
    this.uptimeAt = performance.now();
    this.setState(v.state);
    this.renderHead();
    this.setUsage(v.usage || {});
  }

  renderHead() {
    const v = this.info;
    this.titleEl.textContent = v.name;
    this.titleEl.title = v.name;
    this.modelEl.textContent = [v.provider, v.model].filter(Boolean).join(' · ');
    this.statusModel.textContent = v.model || '';
    const badges = [];
    if (v.isolated === false) {
      badges.push(h('span', { class: 'badge warn not-isolated', title: `This session runs in the "${v.sandbox || 'process'}" sandbox, which is not an isolation boundary: the agent's commands run on the host as the server's user.` },
        icon('warn'), 'Not isolated'));
    } else if (v.sandbox) {
      badges.push(h('span', { class: 'badge ok', title: 'Sandbox' }, v.sandbox));
    }
    if (v.agent && v.agent !== 'builtin') {
      badges.push(h('span', { class: 'badge agent', title: 'The agent runs inside the sandbox' }, v.agent));
    }
    if (v.network === 'none') badges.push(h('span', { class: 'badge', text: 'no network' }));
    this.badges.replaceChildren(...badges);
    const f = (this.app.platform && this.app.platform.features) || {};
    this.emailBtn.hidden = !f.email;
    this.exedevBtn.hidden = !f.exedevNew;
    this.app.onChange(this);
  }

  // sync takes what the session list says. A connected stream is fresher for
  // the state; the name can change from elsewhere.
  sync(v) {
    if (v.name && v.name !== this.info.name) {
      this.info.name = v.name;
      this.renderHead();
    }
    if (this.loaded && !this.stream.connected && v.state && v.state !== this.state) {
      this.info = { ...this.info, ...v };
      this.setState(v.state);
    }
  }

  rename(name) {
    this.info.name = name;
    this.renderHead();
  }

  setState(state) {
    if (!state) return;
    this.state = state;
    this.dotEl.className = `dot s-${state}`;
    this.stateEl.textContent = STATE_LABEL[state] || state;
    const ended = ENDED.has(state);
    this.composer.hidden = ended;
    this.endBtn.hidden = ended || state === 'stopping';
    if (ended) {
      this.setBusy(false);
      this.endedBanner.hidden = false;
      if (!this.endedBanner.childElementCount) {
        this.endedBanner.append(icon('info'),
          h('span', { class: 'ended-text', text: `This session has ended${this.info.error ? ': ' + this.info.error : ''}. Its sandbox is gone; the transcript stays.` }),
          h('a', { class: 'btn small', href: api.transcriptURL(this.id, 'md'), download: '' }, icon('download'), 'Download transcript'));
      }
    }
    this.tick();
    this.app.onChange(this);
  }

  get ended() { return ENDED.has(this.state); }

  onEvent(type, d) {
    switch (type) {
      case 'status': return this.onStatus(d);
      case 'user_message': return this.transcript.user(d);
      case 'message_delta': return this.transcript.delta(d);
      case 'message': return this.transcript.message(d);
      case 'thinking_delta': return this.transcript.thinkingDelta(d);
      case 'thinking': return this.transcript.thinking(d);
      case 'tool_call': return this.transcript.toolCall(d);
      case 'tool_result': return this.transcript.toolResult(d);
      case 'agent_busy': return this.setBusy(true);
      case 'agent_idle':
        this.transcript.turnEnded();
        return this.setBusy(false);
      case 'usage': return this.setUsage(d.total || d);
      case 'error_event': return this.transcript.error(d);
      case 'exit': return this.onExit(d);
    }
  }

  onStatus(d) {
    if (typeof d.uptime === 'number') {
      this.uptimeBase = d.uptime;
      this.uptimeAt = performance.now();
    }
    if (d.state === 'creating' || d.state === 'booting' || (this.boot && !this.boot.done)) this.bootProgress(d);
    if (d.state === 'error' && d.message) this.info.error = d.message;
    this.setState(d.state);
  }

  // bootProgress lists the sandbox's start-up phases as they arrive.
  bootProgress(d) {
    if (!this.boot) {
      const list = h('ol');
      const title = h('h3', { text: 'Starting the sandbox…' });
      const el = h('div', { class: 'boot', role: 'status' }, title, list);
      this.log.append(el);
      this.boot = { el, list, title, done: false, started: d.uptime || 0 };
    }
    const b = this.boot;
    const text = d.message || d.phase || STATE_LABEL[d.state] || d.state;
    if (d.state === 'creating' || d.state === 'booting') {
      for (const li of b.list.children) li.classList.remove('current');
      b.list.append(h('li', { class: 'current', text }));
      return;
    }
    b.done = true;
    b.el.classList.add('done');
    for (const li of b.list.children) li.classList.remove('current');
    if (d.state === 'active') {
      const secs = Math.round(Math.max(0, (d.uptime || 0) - b.started));
      b.title.textContent = secs >= 1 ? `Sandbox ready in ${secs} s` : 'Sandbox ready';
      b.list.hidden = true;
      announce('The sandbox is ready');
    } else {
      b.title.textContent = 'The sandbox did not start';
      b.list.append(h('li', { text }));
    }
  }

  setBusy(busy) {
    if (this.busy === busy) return;
    this.busy = busy;
    this.working.hidden = !busy;
    this.sendBtn.disabled = busy;
    this.busySince = performance.now();
    if (busy) this.elapsedEl.textContent = '';
    if (this.stream.connected && this.active) announce(busy ? 'The agent is working' : 'The agent has finished');
    this.app.onChange(this);
  }

  setUsage(u) {
    const inTok = u.inputTokens || 0, outTok = u.outputTokens || 0;
    this.usageEl.textContent = `${fmtTokens(inTok)} in · ${fmtTokens(outTok)} out · ${fmtCost(u.costUsd)}`;
  }

  onExit(d) {
    this.setBusy(false);
    this.transcript.turnEnded();
    if (!ENDED.has(this.state)) this.setState(d.code ? 'error' : 'stopped');
    let reason = String(d.reason || '').trim();
    if (reason) reason = reason[0].toUpperCase() + reason.slice(1) + (/[.!?]$/.test(reason) ? '' : '.');
    const text = this.endedBanner.querySelector('.ended-text');
    if (text && reason) text.textContent = `This session has ended. ${reason} Its sandbox is gone; the transcript stays.`;
    if (!this.endedAtOpen) this.showOverlay(reason);
  }

  showOverlay(reason) {
    this.overlay?.remove();
    const idle = /idle timeout/i.test(reason);
    const titleId = `overlay-title-${this.id}`;
    const dismiss = () => { this.overlay.remove(); this.overlay = null; this.scroller.focus(); };
    const ok = h('button', { type: 'button', class: 'btn primary', onclick: dismiss }, 'View transcript');
    this.overlay = h('div', { class: 'overlay', role: 'alertdialog', 'aria-labelledby': titleId, 'aria-modal': 'false' },
      h('div', { class: 'card overlay-card' },
        h('h2', { id: titleId, text: idle ? 'Idle timeout' : 'Session ended' }),
        h('p', { text: idle ? `The session was idle for too long and has been stopped. ${reason}` : (reason || 'The session has ended.') }),
        h('p', { text: 'Its sandbox is gone. The transcript stays and can be downloaded.' }),
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'btn', onclick: () => this.app.onCloseTab(this.id) }, 'Close tab'), ok)));
    this.overlay.addEventListener('keydown', (e) => { if (e.key === 'Escape') dismiss(); });
    this.el.append(this.overlay);
    if (this.active) ok.focus();
  }

  onConn(c) {
    const text = { open: 'live', reconnecting: 'reconnecting…', closed: '', gone: '' }[c] ?? '';
    this.connEl.textContent = this.ended ? '' : text;
    if (c === 'gone') this.gone();
  }

  // gone: the server does not know this session (any more) for this user.
  gone() {
    this.app.onGone(this.id);
  }

  tick() {
    const up = this.ended ? this.uptimeBase : this.uptimeBase + (performance.now() - this.uptimeAt) / 1000;
    this.uptimeEl.textContent = `up ${fmtDuration(up)}`;
    if (this.busy) this.elapsedEl.textContent = fmtDuration((performance.now() - this.busySince) / 1000);
  }

  grow() {
    const ta = this.input;
    ta.style.height = 'auto';
    ta.style.height = Math.min(ta.scrollHeight + 2, window.innerHeight * 0.4) + 'px';
  }

  onKey(e) {
    const mod = e.ctrlKey || e.metaKey;
    if (e.key === 'Enter' && (mod || (loadEnterSends() && !e.shiftKey && !e.altKey))) {
      e.preventDefault();
      this.send();
    }
  }

  async send() {
    const text = this.input.value;
    if (!text.trim() || this.ended) return;
    if (this.busy) {
      toast('The agent is still working: wait, or stop it first.', true);
      return;
    }
    this.sendBtn.disabled = true;
    try {
      await api.input(this.id, text);
      this.input.value = '';
      this.grow();
      this.stick = true;
    } catch (err) {
      toast(err.message, true);
    } finally {
      this.sendBtn.disabled = this.busy;
    }
  }

  async stop() {
    this.stopBtn.disabled = true;
    try {
      await api.cancel(this.id);
    } catch (err) {
      toast(err.message, true);
    } finally {
      this.stopBtn.disabled = false;
    }
  }

  async end() {
    const ok = await confirmDialog('End this session?',
      `“${this.info.name}” will stop and its sandbox, with every file in it, will be deleted. The transcript stays.`, 'End session');
    if (!ok) return;
    try {
      await api.end(this.id);
    } catch (err) {
      toast(err.message, true);
    }
  }

  scrollDown() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  show() {
    this.active = true;
    this.el.hidden = false;
    if (this.loaded) this.app.pool.use(this.stream);
    if (this.stick) this.scrollDown();
    this.tick();
  }

  hide() {
    this.active = false;
    this.el.hidden = true;
  }

  focus() {
    if (!this.ended && !this.composer.hidden) this.input.focus({ preventScroll: true });
    else this.scroller.focus({ preventScroll: true });
  }

  destroy() {
    this.app.pool.drop(this.stream);
    this.el.remove();
  }
}
