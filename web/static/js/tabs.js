// The tab strip: one tab per open session with a state dot; click to show,
// double-click or F2 to rename, drag (or Shift+←/→) to reorder, × (or Delete,
// or middle click) to close. Closing a tab only hides the session.
import { h, icon, STATE_LABEL } from './util.js';

export class TabBar {
  // cb: onActivate(id), onClose(id), onReorder(ids), onRename(id, name) -> Promise
  constructor(el, cb) {
    this.el = el;
    this.cb = cb;
    this.tabs = new Map(); // id -> {wrap, btn, dot, name, close}
    this.order = [];
    this.dragId = null;
  }

  // sync makes the strip show order, with active selected.
  sync(order, active) {
    this.order = [...order];
    for (const [id, t] of this.tabs) {
      if (!order.includes(id)) {
        t.wrap.remove();
        this.tabs.delete(id);
      }
    }
    for (const id of order) {
      const t = this.tabs.get(id) || this.create(id);
      this.el.append(t.wrap); // appending in order also reorders
      const on = id === active;
      t.wrap.classList.toggle('active', on);
      t.btn.setAttribute('aria-selected', String(on));
      t.btn.tabIndex = on || (!order.includes(active) && id === order[0]) ? 0 : -1;
      t.close.tabIndex = on ? 0 : -1;
    }
  }

  create(id) {
    const dot = h('span', { class: 'dot' });
    const name = h('span', { class: 'tab-name', text: '…' });
    const btn = h('button', { type: 'button', role: 'tab', id: `tab-${id}`, 'aria-controls': `panel-${id}`, 'aria-selected': 'false', class: 'tab-main' }, dot, name);
    const close = h('button', { type: 'button', class: 'tab-close', 'aria-label': 'Close tab', title: 'Close tab (the session keeps running)' }, icon('x'));
    const wrap = h('div', { class: 'tab', draggable: 'true', dataset: { sessionId: id } }, btn, close);
    btn.addEventListener('click', () => this.cb.onActivate(id));
    btn.addEventListener('dblclick', () => this.startRename(id));
    btn.addEventListener('keydown', (e) => this.onKey(e, id));
    close.addEventListener('click', (e) => { e.stopPropagation(); this.cb.onClose(id); });
    wrap.addEventListener('auxclick', (e) => { if (e.button === 1) { e.preventDefault(); this.cb.onClose(id); } });
    this.dragEvents(wrap, id);
    const t = { wrap, btn, dot, name, close };
    this.tabs.set(id, t);
    return t;
  }

  // update shows a session's name and state.
  update(id, name, state, busy) {
    const t = this.tabs.get(id);
    if (!t) return;
    const st = busy && state === 'active' ? 'busy' : state;
    t.dot.className = `dot s-${st}`;
    if (!t.renaming) t.name.textContent = name;
    const label = STATE_LABEL[st] || st;
    t.btn.title = `${name} — ${label}`;
    t.dot.setAttribute('aria-label', label);
    t.dot.setAttribute('role', 'img');
    t.close.setAttribute('aria-label', `Close tab ${name}`);
  }

  focus(id) {
    this.tabs.get(id)?.btn.focus();
  }

  onKey(e, id) {
    const i = this.order.indexOf(id);
    const move = (j) => {
      if (j < 0 || j >= this.order.length) return;
      e.preventDefault();
      if (e.shiftKey) {
        const ids = [...this.order];
        ids.splice(i, 1);
        ids.splice(j, 0, id);
        this.cb.onReorder(ids);
        this.focus(id);
      } else {
        this.focus(this.order[j]);
      }
    };
    switch (e.key) {
      case 'ArrowLeft': return move(i - 1);
      case 'ArrowRight': return move(i + 1);
      case 'Home': return move(0);
      case 'End': return move(this.order.length - 1);
      case 'F2': e.preventDefault(); return this.startRename(id);
      case 'Delete': e.preventDefault(); return this.cb.onClose(id);
    }
  }

  // startRename edits a tab's name in place; Enter saves, Escape cancels.
  startRename(id) {
    const t = this.tabs.get(id);
    if (!t || t.renaming) return;
    t.renaming = true;
    const old = t.name.textContent;
    const input = h('input', { class: 'tab-rename', maxlength: '100', 'aria-label': 'Session name', value: old });
    t.wrap.draggable = false;
    t.btn.hidden = true;
    t.wrap.insertBefore(input, t.close);
    input.focus();
    input.select();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const name = input.value.trim();
      input.remove();
      t.btn.hidden = false;
      t.wrap.draggable = true;
      t.renaming = false;
      if (save && name && name !== old) {
        t.name.textContent = name;
        try {
          await this.cb.onRename(id, name);
        } catch {
          t.name.textContent = old;
        }
      }
      t.btn.focus();
    };
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') { e.preventDefault(); finish(true); }
      if (e.key === 'Escape') { e.preventDefault(); finish(false); }
      e.stopPropagation();
    });
    input.addEventListener('blur', () => finish(true));
  }

  dragEvents(wrap, id) {
    wrap.addEventListener('dragstart', (e) => {
      this.dragId = id;
      e.dataTransfer.effectAllowed = 'move';
      e.dataTransfer.setData('text/plain', id);
      wrap.classList.add('dragging');
    });
    wrap.addEventListener('dragend', () => {
      this.dragId = null;
      for (const t of this.tabs.values()) t.wrap.classList.remove('dragging', 'drop-before', 'drop-after');
    });
    wrap.addEventListener('dragover', (e) => {
      if (!this.dragId || this.dragId === id) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'move';
      const r = wrap.getBoundingClientRect();
      const after = e.clientX > r.left + r.width / 2;
      wrap.classList.toggle('drop-after', after);
      wrap.classList.toggle('drop-before', !after);
    });
    wrap.addEventListener('dragleave', () => wrap.classList.remove('drop-before', 'drop-after'));
    wrap.addEventListener('drop', (e) => {
      if (!this.dragId || this.dragId === id) return;
      e.preventDefault();
      const after = wrap.classList.contains('drop-after');
      wrap.classList.remove('drop-before', 'drop-after');
      const ids = this.order.filter((x) => x !== this.dragId);
      ids.splice(ids.indexOf(id) + (after ? 1 : 0), 0, this.dragId);
      this.cb.onReorder(ids);
    });
  }
}
