// The model picker: a combobox over the provider's model list with search.
// Any id may be typed, for models the list does not know.
import { h, fmtTokens } from './util.js';

function price(m) {
  if (!m.costPer1MIn && !m.costPer1MOut) return '';
  const f = (v) => '$' + (v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(2).replace(/\.?0+$/, '') : v.toFixed(3).replace(/0+$/, ''));
  return `${f(m.costPer1MIn)} / ${f(m.costPer1MOut)} per 1M tokens`;
}

export function describeModel(m) {
  if (!m) return '';
  return [m.name && m.name !== m.id ? m.name : '', m.contextWindow ? `${fmtTokens(m.contextWindow)} context` : '', price(m), m.canReason ? 'reasoning' : '']
    .filter(Boolean).join(' · ');
}

export class ModelPicker {
  constructor(input, list, onChange) {
    this.input = input;
    this.list = list;
    this.onChange = onChange;
    this.models = [];
    this.shown = [];
    this.active = -1;
    input.addEventListener('input', () => { if (document.activeElement === input) this.open(); this.onChange(); });
    input.addEventListener('focus', () => this.open());
    input.addEventListener('click', () => this.open());
    input.addEventListener('blur', () => setTimeout(() => this.close(), 150));
    input.addEventListener('keydown', (e) => this.onKey(e));
    // Keep focus in the input while an option is clicked.
    list.addEventListener('mousedown', (e) => e.preventDefault());
  }

  get value() { return this.input.value.trim(); }

  set value(v) {
    this.input.value = v;
    this.onChange();
  }

  find(id) { return this.models.find((m) => m.id === id); }

  setModels(models) {
    this.models = models || [];
    if (!this.list.hidden) this.render();
  }

  defaultModel() {
    return (this.models.find((m) => m.default) || this.models[0] || {}).id || '';
  }

  filtered() {
    const q = this.value.toLowerCase();
    // With the exact id of a known model typed, show the whole list.
    if (!q || this.find(this.value)) return this.models;
    return this.models.filter((m) => m.id.toLowerCase().includes(q) || (m.name || '').toLowerCase().includes(q));
  }

  render() {
    this.shown = this.filtered().slice(0, 200);
    this.active = this.shown.findIndex((m) => m.id === this.value);
    if (!this.shown.length) {
      this.list.replaceChildren(h('li', { class: 'm-empty', role: 'option', 'aria-disabled': 'true',
        text: this.models.length ? 'No model matches; the typed id is used as is.' : 'No model list; type a model id.' }));
    } else {
      this.list.replaceChildren(...this.shown.map((m, i) => h('li', {
        role: 'option', id: `ns-model-opt-${i}`, 'aria-selected': String(i === this.active), dataset: { modelId: m.id },
        onclick: () => this.pick(m.id),
      }, h('span', { class: 'm-id', text: m.id }), h('span', { class: 'm-meta', text: m.default ? 'default' : (m.name && m.name !== m.id ? m.name : '') }))));
    }
    this.highlight();
  }

  open() {
    this.render();
    this.list.hidden = false;
    this.input.setAttribute('aria-expanded', 'true');
  }

  close() {
    this.list.hidden = true;
    this.input.setAttribute('aria-expanded', 'false');
    this.input.removeAttribute('aria-activedescendant');
  }

  highlight() {
    const items = this.list.querySelectorAll('li[role=option]');
    items.forEach((li, i) => li.setAttribute('aria-selected', String(i === this.active)));
    const cur = items[this.active];
    if (cur && cur.id) {
      this.input.setAttribute('aria-activedescendant', cur.id);
      cur.scrollIntoView({ block: 'nearest' });
    } else {
      this.input.removeAttribute('aria-activedescendant');
    }
  }

  pick(id) {
    this.input.value = id;
    this.close();
    this.onChange();
  }

  onKey(e) {
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      if (this.list.hidden) this.open();
      const n = this.shown.length;
      if (!n) return;
      this.active = e.key === 'ArrowDown' ? (this.active + 1) % n : (this.active - 1 + n) % n;
      this.highlight();
    } else if (e.key === 'Enter' && !this.list.hidden && this.active >= 0 && this.shown[this.active]) {
      e.preventDefault();
      this.pick(this.shown[this.active].id);
    } else if (e.key === 'Escape' && !this.list.hidden) {
      e.preventDefault();
      e.stopPropagation();
      this.close();
    }
  }
}
