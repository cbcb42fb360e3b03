// The ports programs in a session's sandbox listen on, in its status bar:
// "port 3000 is open: Preview". A preview opens in a new tab on an origin of
// its own (never this page's: the previewed app is untrusted), through a
// link that carries a short-lived grant, so the list is fetched again while
// it is shown. Polled only while the session's tab is shown and it runs.
import { api } from './api.js';
import { h, icon } from './util.js';

const EVERY_MS = 5000;

export class PortsWatcher {
  constructor(id) {
    this.id = id;
    this.el = h('span', { class: 'st-ports', 'aria-live': 'polite' });
    this.timer = 0;
    this.want = false;
    this.last = '';
  }

  // watch starts or stops polling.
  watch(on) {
    if (on === this.want) return;
    this.want = on;
    clearTimeout(this.timer);
    if (on) this.poll();
    else this.render([], false);
  }

  async poll() {
    if (!this.want) return;
    try {
      const r = await api.ports(this.id);
      if (this.want) this.render(r.ports || [], Boolean(r.previews));
    } catch {
      // Paused, ended or still booting: nothing to show.
      if (this.want) this.render([], false);
    }
    if (this.want) this.timer = setTimeout(() => this.poll(), EVERY_MS);
  }

  render(ports, previews) {
    const key = JSON.stringify([ports.map((p) => [p.port, Boolean(p.previewUrl), p.previewNote || '']), previews]);
    if (key === this.last) {
      // Same ports: only the links' grants are new.
      for (const p of ports) {
        const a = this.el.querySelector(`a[data-port="${Number(p.port)}"]`);
        if (a && p.previewUrl) a.href = p.previewUrl;
      }
      return;
    }
    this.last = key;
    this.el.replaceChildren(...ports.map((p) => {
      const item = h('span', { class: 'port', dataset: { port: String(p.port) } }, icon('eye'), `port ${p.port} is open`);
      if (p.previewUrl) {
        item.append(': ', h('a', { href: p.previewUrl, target: '_blank', rel: 'noopener noreferrer', class: 'preview-link', dataset: { port: String(p.port) }, title: `Open what listens on port ${p.port} in a new tab, on an origin of its own` }, 'Preview'));
      } else if (previews && p.previewNote) {
        item.title = p.previewNote;
      } else if (!previews) {
        item.title = 'Live previews are off on this server (--preview-listen, --preview-domain)';
      }
      return item;
    }));
  }

  destroy() { this.watch(false); }
}
