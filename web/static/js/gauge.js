// The memory gauge in the top bar: a ring that fills with the host's memory
// use (green, amber from 70%, red from 90%), polled from /api/system; a click
// shows the details.
import { api } from './api.js';
import { $, fmtMiB } from './util.js';

const POLL_MS = 5000;

export class Gauge {
  constructor() {
    this.btn = $('#gauge');
    this.bar = $('#gauge .gauge-bar');
    this.text = $('#gauge-text');
    this.pop = $('#gauge-pop');
    this.timer = null;
    this.btn.addEventListener('click', () => this.toggle());
    document.addEventListener('click', (e) => {
      if (!this.pop.hidden && !e.target.closest('.gauge-wrap')) this.toggle(false);
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !this.pop.hidden) { this.toggle(false); this.btn.focus(); }
    });
    document.addEventListener('visibilitychange', () => { if (!document.hidden) this.poll(); });
  }

  toggle(show = this.pop.hidden) {
    this.pop.hidden = !show;
    this.btn.setAttribute('aria-expanded', String(show));
    if (show) this.poll();
  }

  start() { this.poll(); }

  async poll() {
    clearTimeout(this.timer);
    try {
      this.show(await api.system());
    } catch {
      this.text.textContent = '?';
    }
    this.timer = setTimeout(() => this.poll(), document.hidden ? POLL_MS * 6 : POLL_MS);
  }

  show(s) {
    const pct = Math.max(0, Math.min(100, Number(s.percentUsed) || 0));
    this.bar.setAttribute('stroke-dasharray', `${pct.toFixed(1)} 100`);
    this.btn.classList.toggle('amber', pct >= 70 && pct < 90);
    this.btn.classList.toggle('red', pct >= 90);
    this.text.textContent = `${Math.round(pct)}%`;
    this.btn.setAttribute('aria-label', `Host memory ${Math.round(pct)}% used; ${s.sessions} of ${s.maxSessions} sessions running`);
    this.btn.title = `Memory ${pct.toFixed(1)}% used`;
    $('#g-used').textContent = `${fmtMiB(s.usedMiB)} of ${fmtMiB(s.totalMiB)} (${pct.toFixed(1)}%)`;
    $('#g-avail').textContent = fmtMiB(s.availableMiB);
    $('#g-cache').textContent = fmtMiB(s.cacheMiB);
    $('#g-load').textContent = [s.load1, s.load5, s.load15].map((l) => (Number(l) || 0).toFixed(2)).join(' / ');
    $('#g-sessions').textContent = `${s.sessions} of ${s.maxSessions}`;
  }
}
