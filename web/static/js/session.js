// One session's panel: header, transcript, "working" indicator, composer
// and status bar, fed by its event stream. It stays in the page while its tab
// is open (hidden when another tab is shown), so a session keeps streaming in
// the background.
//
// A paused session keeps its panel and transcript; sending a message (or
// Resume) starts it again, with its API key where the server no longer holds
// it: the one this browser remembers for the provider, else the user is asked.
import { api } from './api.js';
import { h, icon, iconButton, fmtDuration, fmtTokens, fmtCost, fmtMs, fmtMiB, toast, announce, ENDED, STATE_LABEL } from './util.js';
import { SessionStream } from './stream.js';
import { Transcript } from './transcript.js';
import { loadEnterSends, loadKeys, rememberKey } from './prefs.js';
import { confirmDialog, openEmail, openExeDev, askKey } from './dialogs.js';
import { TerminalDock } from './terminal.js';
import { PortsWatcher } from './ports.js';
import { WorkspacePanel } from './files.js';

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
    this.resuming = null; // the note of a resume in progress: {note, done}
    this.pausing = false; // a pause request is on its way
    this.pauseNote = null; // the note of the last paused event, until its status says why
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
    this.terminals = new TerminalDock(id);
    this.ports = new PortsWatcher(id);
    this.workspace = new WorkspacePanel(this);
    this.pauseBtn = h('button', { type: 'button', class: 'btn ghost small pause-session', 'aria-label': 'Pause session', title: 'Pause: save the sandbox and free its memory; a message resumes it', disabled: true, onclick: () => this.pause() }, icon('pause'), h('span', { class: 'label', text: 'Pause' }));
    const head = h('header', { class: 's-head' }, this.titleEl, this.modelEl, this.badges,
      h('div', { class: 's-actions' },
        h('button', { type: 'button', class: 'btn ghost small', 'aria-label': 'Rename', title: 'Rename (F2 on the tab)', onclick: () => this.app.onRename(id) }, icon('edit'), h('span', { class: 'label', text: 'Rename' })),
        h('a', { class: 'btn ghost small download-transcript', href: api.transcriptURL(id, 'md'), download: '', 'aria-label': 'Download the conversation as Markdown', title: 'Download the conversation as Markdown' }, icon('download'), h('span', { class: 'label', text: 'Download' })),
        this.workspace.button, this.terminals.button, this.emailBtn, this.exedevBtn, this.pauseBtn, this.endBtn));

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

    this.pausedText = h('span', { class: 'paused-text' });
    this.resumeBtn = h('button', { type: 'button', class: 'btn small primary resume-session', onclick: () => this.resumeNow() }, icon('play'), 'Resume');
    this.pausedBanner = h('div', { class: 'paused-banner', role: 'status', hidden: true },
      h('span', { class: 'badge paused', text: 'Paused' }), this.pausedText, h('span', { class: 'grow' }), this.resumeBtn);

    this.stateEl = h('span', { class: 'st-text' });
    this.dotEl = h('span', { class: 'dot' });
    this.uptimeEl = h('span', { class: 'st-uptime', title: 'Uptime' });
    this.usageEl = h('span', { class: 'st-usage', title: 'Tokens in / out and cost so far' });
    this.connEl = h('span', { class: 'st-conn' });
    this.statusModel = h('span', { class: 'st-model' });
    const bar = h('footer', { class: 'statusbar' },
      h('span', { class: 'st-state' }, this.dotEl, this.stateEl), this.uptimeEl, this.usageEl,
      this.ports.el, h('span', { class: 'grow' }), this.connEl, this.statusModel);

    this.el = h('section', { class: 'session', id: `panel-${id}`, role: 'tabpanel', 'aria-labelledby': `tab-${id}`, hidden: true, dataset: { sessionId: id } },
      head, this.scroller, this.terminals.el, this.working, this.endedBanner, this.pausedBanner, this.composer, bar, this.workspace.el);
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
    // Absent (omitted when false or not paused) means no.
    this.info = { ...this.info, ...v, keyNeeded: Boolean(v.keyNeeded), resumeKind: v.resumeKind || '' };
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
      badges.push(h('span', { class: 'badge warn not-isolated', title: v.sandbox === 'kubernetes'
        ? 'This session runs in a Kubernetes pod without a VM runtime class: a container on a shared node kernel, not a VM boundary.'
        : `This session runs in the "${v.sandbox || 'process'}" sandbox, which is not an isolation boundary: the agent's commands run on the host as the server's user.` },
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
    if (!this.loaded || this.stream.connected || !v.state) return;
    if (v.state !== this.state || v.state === 'paused') {
      // Whether a paused session needs its key changes when the server restarts.
      this.info = { ...this.info, ...v, keyNeeded: Boolean(v.keyNeeded), resumeKind: v.resumeKind || this.info.resumeKind };
      this.setState(v.state);
    }
    // Resumed (or ended) elsewhere while this stream slept: listen again.
    if (this.stream.asleep && v.state !== 'paused') this.listen();
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
    this.terminals.setUsable(state === 'active' || state === 'busy');
    this.ports.watch(Boolean(this.active) && (state === 'active' || state === 'busy'));
    this.workspace.setState(state);
    this.updateActions();
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

  // updateActions shows what can be done in the current state: pause an idle
  // session, resume a paused one.
  updateActions() {
    const paused = this.state === 'paused';
    this.pauseBtn.hidden = this.ended || paused;
    this.pauseBtn.disabled = this.state !== 'active' || this.busy || this.pausing;
    this.pausedBanner.hidden = !paused;
    this.input.placeholder = paused ? 'Message the agent… (sending resumes the session)' : 'Message the agent…';
    if (!paused) return;
    const v = this.info;
    const how = v.resumeKind === 'snapshot' ? 'It resumes from a snapshot: everything runs on where it stood.'
      : 'It resumes cold: its files are kept, processes will not survive.';
    const key = v.keyNeeded ? ' The server restarted and no longer holds its API key: it will be asked for.' : '';
    this.pausedText.textContent = `${how} Sending a message resumes it.${key}`;
  }

  onEvent(type, d) {
    this.workspace.onEvent(type, d);
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
      case 'paused': return this.onPaused(d);
      case 'resumed': return this.onResumed(d);
    }
  }

  onStatus(d) {
    if (typeof d.uptime === 'number') {
      this.uptimeBase = d.uptime;
      this.uptimeAt = performance.now();
    }
    if (d.state === 'creating' || d.state === 'booting' || (this.boot && !this.boot.done)) this.bootProgress(d);
    if (d.state === 'error' && d.message) this.info.error = d.message;
    if (d.state === 'paused' && this.pauseNote) {
      this.pauseNote.why = String(d.message || '').replace(/^paused: /, '');
      this.renderPauseNote();
      this.pauseNote = null;
    }
    if (d.state === 'resuming') this.resumeProgress(d);
    else if (this.resuming) this.resumeEnded(d);
    this.setState(d.state);
  }

  // onPaused notes in the conversation how the session was saved; the
  // status that follows says why it paused.
  onPaused(d) {
    this.info.resumeKind = d.kind === 'snapshot' ? 'snapshot' : 'cold';
    this.pauseNote = { el: this.transcript.notice('', 'pause-note'), d, why: '' };
    this.renderPauseNote();
    this.updateActions();
  }

  renderPauseNote() {
    const { el, d, why } = this.pauseNote;
    const head = !why ? 'Paused' : /^paused\b/i.test(why) ? why[0].toUpperCase() + why.slice(1) : `Paused: ${why}`;
    const took = d.ms ? ` (${fmtMs(Number(d.ms))})` : '';
    if (d.kind === 'snapshot') {
      const size = d.bytes ? ` (${fmtMiB(d.bytes / 1048576)})` : '';
      el.textContent = `${head}. The whole sandbox was saved${size}: it resumes where it stood.${took}`;
    } else if (d.reason && d.reason === why) {
      el.textContent = `${head}.${took}`; // the reason says it all
    } else {
      el.textContent = `${head}. Its files are kept, its processes are not${d.reason ? `: ${d.reason}` : ''}.${took}`;
    }
  }

  // resumeProgress shows that the session is resuming, and its phase.
  resumeProgress(d) {
    if (!this.resuming) this.resuming = { note: this.transcript.notice('Resuming…', 'resume-note'), done: false };
    if (!this.resuming.done) this.resuming.note.textContent = d.phase && d.phase !== 'resume' ? `Resuming… (${d.phase})` : 'Resuming…';
  }

  // onResumed says how the session came back, and how long it took.
  onResumed(d) {
    if (!this.resuming) this.resuming = { note: this.transcript.notice('', 'resume-note'), done: false };
    const ms = fmtMs(Number(d.ms) || 0);
    this.resuming.note.textContent = d.kind === 'snapshot' ? `Resumed from snapshot in ${ms}`
      : `Resumed cold in ${ms}${d.reason ? `: ${d.reason}` : ''}`;
    this.resuming.done = true;
    if (this.stream.connected && this.active) announce('The session has resumed');
  }

  // resumeEnded closes a resume's note when the state moves on; a session
  // that went back to paused did not come back.
  resumeEnded(d) {
    if (!this.resuming.done) {
      this.resuming.note.textContent = `Resuming failed${d.message ? `: ${d.message}` : ''}`;
      this.resuming.note.classList.add('bad');
    }
    this.resuming = null;
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
      const last = b.list.lastElementChild; // a phase that reports progress (a clone) updates its line
      if (last && d.message && /^(clone|archive)$/.test(d.phase) && last.dataset.phase === d.phase) return void (last.textContent = text);
      for (const li of b.list.children) li.classList.remove('current');
      b.list.append(h('li', { class: 'current', text, dataset: { phase: d.phase || '' } }));
      return;
    }
    b.done = true;
    b.el.classList.add('done');
    for (const li of b.list.children) li.classList.remove('current');
    if (d.state === 'active') {
      const secs = Math.round(Math.max(0, (d.uptime || 0) - b.started));
      // A VM taken from the warm pool was booted before the session asked.
      const pooled = [...b.list.children].some(li => li.dataset.phase === 'pool');
      b.title.textContent = `Sandbox ready${pooled ? ' (from pool)' : ''}${secs >= 1 ? ` in ${secs} s` : ''}`;
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
    this.updateActions();
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
    const text = { open: 'live', reconnecting: 'reconnecting…', closed: '', paused: '', gone: '' }[c] ?? '';
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
      if (!(await this.deliver(text))) return;
      this.input.value = '';
      this.grow();
      this.stick = true;
    } catch (err) {
      toast(err.message, true);
    } finally {
      this.sendBtn.disabled = this.busy;
    }
  }

  // deliver sends a message. The server resumes a paused session for it, but
  // only with the API key it holds: where it holds none, the session is
  // resumed with the key first. False when no key was given.
  async deliver(text) {
    // The input resumes the session: its stream must then be opened again.
    let wake = this.state === 'paused' || this.state === 'pausing' || this.stream.asleep;
    if (this.state === 'paused' && this.info.keyNeeded) {
      if (!(await this.resume())) return false;
      wake = false; // resume did
    }
    try {
      await api.input(this.id, text);
    } catch (err) {
      if (!err.keyNeeded) throw err;
      // The server restarted since this page last looked.
      this.needKey();
      if (!(await this.resume())) return false;
      wake = false;
      await api.input(this.id, text);
    }
    if (wake) this.listen();
    return true;
  }

  async resumeNow() {
    this.resumeBtn.disabled = true;
    try {
      await this.resume();
    } finally {
      this.resumeBtn.disabled = false;
    }
  }

  // resume starts the paused session again. Where the server needs its API
  // key, the key this browser remembers for the provider goes with it, else
  // the user is asked for one. False when it did not resume: no key was
  // given, or it failed (and the error is shown).
  async resume() {
    const provider = this.info.provider;
    const remembered = loadKeys()[provider] || '';
    let key = this.info.keyNeeded ? remembered : '';
    let remember = false;
    let problem = '';
    for (;;) {
      if (this.info.keyNeeded && !key) {
        const got = await askKey(this.info, problem);
        if (!got) return false;
        ({ key, remember } = got);
      }
      try {
        const v = await api.resume(this.id, key);
        if (remember) rememberKey(provider, key);
        this.setInfo(v);
        this.listen();
        return true;
      } catch (err) {
        if (err.keyNeeded && !key && remembered) {
          // Needed after all: the remembered key first.
          this.needKey();
          key = remembered;
        } else if (err.keyNeeded || (key && err.status === 400)) {
          // Needed, or the key was refused: ask for one.
          this.needKey();
          problem = err.keyNeeded ? '' : err.message;
          key = '';
        } else {
          toast(err.message, true);
          return false;
        }
      }
    }
  }

  needKey() {
    this.info.keyNeeded = true;
    this.updateActions();
  }

  async pause() {
    this.pausing = true;
    this.updateActions();
    try {
      this.setInfo(await api.pause(this.id));
    } catch (err) {
      toast(err.message, true);
    } finally {
      this.pausing = false;
      this.updateActions();
    }
  }

  // listen opens the stream again once the session runs (or has ended)
  // after it slept through a pause.
  listen() {
    this.stream.wake();
    if (this.active) this.app.pool.use(this.stream);
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
      // A paused session ends without a live stream to tell: fetch its end.
      if (this.stream.asleep) this.listen();
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
    this.ports.watch(this.state === 'active' || this.state === 'busy');
    if (this.stick) this.scrollDown();
    this.tick();
  }

  hide() {
    this.active = false;
    this.el.hidden = true;
    this.ports.watch(false);
  }

  focus() {
    if (!this.ended && !this.composer.hidden) this.input.focus({ preventScroll: true });
    else this.scroller.focus({ preventScroll: true });
  }

  destroy() {
    this.app.pool.drop(this.stream);
    this.terminals.destroy();
    this.ports.destroy();
    this.workspace.destroy();
    this.el.remove();
  }
}
