// The new-session form: name, provider, API key (masked, remembered only on
// request), base URL, model picker fed by /api/models, and advanced options.
import { api } from './api.js';
import { $, debounce, randomName, toast } from './util.js';
import { loadKeys, rememberKey, loadForm, saveForm } from './prefs.js';
import { ModelPicker, describeModel } from './models.js';
import { uploadArchive, fmtBytes } from './files.js';

const LIVE = new Set(['openrouter', 'openai-compatible']); // listed by asking the endpoint

// The form fields of the settings an agent kind may refuse (/api/platform's
// agentKinds[].refuses names them as NewSession does).
const SETTING_FIELDS = { temperature: '#ns-temp', maxTokens: '#ns-maxtokens', thinking: '#ns-thinking' };
// What the form knows when the server describes no agents (an older server).
const BUILTIN = { name: 'builtin', label: "ExeClaw's agent", hint: '', providers: [], refuses: [] };

export class NewSessionForm {
  // onCreated(view) opens the new session.
  constructor(onCreated) {
    this.onCreated = onCreated;
    this.form = $('#new-form');
    this.name = $('#ns-name');
    this.provider = $('#ns-provider');
    this.agent = $('#ns-agent');
    this.key = $('#ns-key');
    this.remember = $('#ns-remember');
    this.baseUrl = $('#ns-baseurl');
    this.info = $('#ns-model-info');
    this.problem = $('#ns-problem');
    this.submitBtn = $('#ns-submit');
    this.kinds = new Map([[BUILTIN.name, BUILTIN]]); // agent kinds the server offers, by name
    this.listing = null; // model list answer for the current provider
    this.fetchSeq = 0;
    this.picker = new ModelPicker($('#ns-model'), $('#ns-model-list'), () => this.describe());

    $('#ns-name-shuffle').addEventListener('click', () => { this.name.value = randomName(); });
    $('#ns-key-show').addEventListener('click', (e) => {
      const show = this.key.type === 'password';
      this.key.type = show ? 'text' : 'password';
      e.currentTarget.textContent = show ? 'Hide' : 'Show';
      e.currentTarget.setAttribute('aria-pressed', String(show));
    });
    $('#ns-key-clear').addEventListener('click', () => {
      this.key.value = '';
      if (loadKeys()[this.provider.value]) rememberKey(this.provider.value, null);
      this.remember.checked = false;
      this.key.focus();
      this.refreshSoon();
    });
    $('#ns-model-refresh').addEventListener('click', () => this.loadModels(true));
    this.provider.addEventListener('change', () => this.providerChanged());
    this.agent.addEventListener('change', () => this.agentChanged());
    this.key.addEventListener('input', () => { if (LIVE.has(this.provider.value)) this.refreshSoon(); });
    this.baseUrl.addEventListener('input', () => this.refreshSoon());
    // Where the workspace starts from: the token's risk is said as soon as one is typed.
    this.repoToken = $('#ns-repo-token');
    this.repoToken.addEventListener('input', () => { $('#ns-repo-token-warn').hidden = !this.repoToken.value; });
    this.archive = $('#ns-archive');
    this.form.addEventListener('submit', (e) => { e.preventDefault(); this.submit(); });
    this.refreshSoon = debounce(() => this.loadModels(), 500);
  }

  init(platform) {
    this.maxUpload = platform && platform.maxUploadBytes;
    const providers = (platform && platform.providers) || [];
    if (providers.length) {
      for (const opt of [...this.provider.options]) if (!providers.includes(opt.value)) opt.remove();
    }
    const f = loadForm();
    if (f.provider && [...this.provider.options].some((o) => o.value === f.provider)) this.provider.value = f.provider;
    // The agent picker shows only when there is a choice.
    const kinds = (platform && platform.agentKinds) || [BUILTIN];
    this.kinds = new Map(kinds.map((k) => [k.name, { ...k, providers: k.providers || [], refuses: k.refuses || [] }]));
    this.agent.replaceChildren(...kinds.map((k) => new Option(k.label || k.name, k.name)));
    $('#ns-agent-field').hidden = kinds.length < 2;
    if (f.agent && this.kinds.has(f.agent)) this.agent.value = f.agent;
    this.name.value = randomName();
    this.agentChanged(true);
    this.providerChanged(true);
  }

  kind() {
    return this.kinds.get(this.agent.value) || this.kinds.values().next().value || BUILTIN;
  }

  // agentChanged explains the chosen agent and picks the provider it needs.
  agentChanged(initial = false) {
    const a = this.kind();
    $('#ns-agent-hint').textContent = a.hint || '';
    // Settings the agent picks itself: the server refuses them for it.
    for (const [setting, sel] of Object.entries(SETTING_FIELDS)) {
      const own = a.refuses.includes(setting);
      $(sel).disabled = own;
      $(sel).title = own ? `${a.label} chooses this itself` : '';
    }
    if (a.providers.length && !a.providers.includes(this.provider.value)) {
      this.provider.value = a.providers[0];
      if (!initial) this.providerChanged();
    }
  }

  // providerChanged fills in what belongs to the chosen provider.
  providerChanged(initial = false) {
    const p = this.provider.value;
    const f = loadForm();
    const per = (f.per && f.per[p]) || {};
    const saved = loadKeys()[p] || '';
    if (!initial || saved) this.key.value = saved;
    this.remember.checked = Boolean(saved);
    this.baseUrl.value = per.baseUrl || '';
    const compat = p === 'openai-compatible';
    this.baseUrl.required = compat;
    this.baseUrl.placeholder = compat ? 'http://localhost:11434/v1' : 'provider default';
    $('#ns-baseurl-opt').textContent = compat ? '(required)' : '(optional)';
    $('#ns-baseurl-hint').textContent = compat
      ? 'The OpenAI-compatible endpoint, for example Ollama at http://localhost:11434/v1.'
      : "Leave empty for the provider's own API.";
    this.key.placeholder = compat ? 'optional for local servers' : '';
    this.picker.input.value = per.model || '';
    this.listing = null;
    this.picker.setModels([]);
    this.loadModels();
  }

  async loadModels(force = false) {
    const p = this.provider.value;
    const base = this.baseUrl.value.trim();
    const seq = ++this.fetchSeq;
    if (p === 'openai-compatible' && !base) {
      this.listing = { models: [] };
      this.picker.setModels([]);
      this.info.textContent = 'Enter the base URL to list its models, or type a model id.';
      return;
    }
    if (base && !/^https?:\/\/[^\s]+$/i.test(base)) return;
    this.info.textContent = 'Loading models…';
    try {
      const key = LIVE.has(p) ? this.key.value.trim() : '';
      const r = await api.models(p, base, key);
      if (seq !== this.fetchSeq) return; // a newer request is on its way
      this.listing = r;
      this.picker.setModels(r.models || []);
      if (!this.picker.value || (force && !this.picker.find(this.picker.value))) {
        this.picker.input.value = this.picker.defaultModel();
      }
      this.describe();
    } catch (err) {
      if (seq !== this.fetchSeq) return;
      this.listing = { models: [], warning: err.message };
      this.picker.setModels([]);
      this.describe();
    }
  }

  describe() {
    const r = this.listing;
    if (!r) return;
    const parts = [];
    const m = this.picker.find(this.picker.value);
    if (m) parts.push(describeModel(m));
    else if (this.picker.value && r.models && r.models.length) parts.push('Not in the list; it is sent as typed.');
    if (r.models && r.models.length) parts.push(`${r.models.length} models (${r.source || 'catalogue'})`);
    if (r.warning) parts.push(r.warning);
    this.info.textContent = parts.filter(Boolean).join(' — ');
  }

  request() {
    const p = this.provider.value;
    const req = { provider: p, apiKey: this.key.value.trim(), model: this.picker.value, name: this.name.value.trim() };
    if (!$('#ns-agent-field').hidden) req.agent = this.agent.value;
    const base = this.baseUrl.value.trim();
    if (base) req.baseUrl = base;
    const sys = $('#ns-system').value;
    if (sys.trim()) req.systemPrompt = sys;
    const num = (sel, int) => {
      const raw = $(sel).disabled ? '' : $(sel).value.trim();
      if (raw === '') return undefined;
      const n = int ? parseInt(raw, 10) : parseFloat(raw);
      return Number.isFinite(n) ? n : NaN;
    };
    const temperature = num('#ns-temp', false), maxTokens = num('#ns-maxtokens', true), idle = num('#ns-idle', true);
    if (temperature !== undefined) req.temperature = temperature;
    if (maxTokens !== undefined) req.maxTokens = maxTokens;
    if (idle !== undefined) req.idleTimeoutMin = idle;
    req.network = $('#ns-network').value;
    const thinking = $('#ns-thinking').disabled ? '' : $('#ns-thinking').value;
    if (thinking) req.thinking = thinking === 'on';
    const repo = $('#ns-repo-url').value.trim();
    if (repo) {
      req.repo = { url: repo };
      const ref = $('#ns-repo-ref').value.trim(), token = this.repoToken.value.trim();
      if (ref) req.repo.ref = ref;
      if (token) req.repo.token = token;
    }
    if (this.archive.files.length) req.archiveUpload = true;
    return req;
  }

  check(req) {
    if (!req.name) return ['ns-name', 'Give the session a name.'];
    const kind = req.agent && this.kinds.get(req.agent);
    if (kind && kind.providers.length && !kind.providers.includes(req.provider)) {
      const named = kind.providers.map((v) => { const o = [...this.provider.options].find((x) => x.value === v); return o ? o.textContent : v; }).join(' or ');
      return ['ns-provider', `${kind.label} works only with ${named}: choose ${named} as the provider.`];
    }
    if (!req.apiKey && req.provider !== 'openai-compatible') return ['ns-key', 'Enter your API key for this provider.'];
    if (req.provider === 'openai-compatible' && !req.baseUrl) return ['ns-baseurl', 'Enter the base URL of the OpenAI-compatible endpoint.'];
    if (req.baseUrl && !/^https?:\/\/[^\s]+$/i.test(req.baseUrl)) return ['ns-baseurl', 'The base URL must start with http:// or https://.'];
    if (!req.model && req.provider === 'openai-compatible') return ['ns-model', 'Type the model id to use.'];
    if (Number.isNaN(req.temperature) || req.temperature < 0 || req.temperature > 2) return ['ns-temp', 'Temperature is between 0 and 2.'];
    if (Number.isNaN(req.maxTokens) || req.maxTokens < 1) return ['ns-maxtokens', 'Max tokens must be a positive number.'];
    if (Number.isNaN(req.idleTimeoutMin) || req.idleTimeoutMin < 5 || req.idleTimeoutMin > 10080) return ['ns-idle', 'The idle timeout is between 5 and 10080 minutes.'];
    if (req.repo && !/^https:\/\/[^\s@]+\/[^\s]+$/i.test(req.repo.url)) return ['ns-repo-url', 'The repository must be an https:// URL without a user name or password (give a token instead).'];
    if (req.repo && req.network === 'none') return ['ns-network', 'Cloning a repository needs the network: choose “Full internet access”.'];
    const file = this.archive.files[0], max = Number(this.maxUpload) || 0;
    if (file && !/\.(tar\.gz|tgz|tar|zip)$/i.test(file.name)) return ['ns-archive', 'The archive must be a .tar.gz, .tgz, .tar or .zip file.'];
    if (file && max && file.size > max) return ['ns-archive', `The archive is ${fmtBytes(file.size)}: more than the ${fmtBytes(max)} an upload may be.`];
    return null;
  }

  async submit() {
    this.problem.textContent = '';
    const req = this.request();
    const bad = this.check(req);
    if (bad) {
      this.problem.textContent = bad[1];
      const field = $('#' + bad[0]);
      if (field.closest('details')) field.closest('details').open = true;
      field.focus();
      return;
    }
    this.submitBtn.disabled = true;
    this.submitBtn.textContent = 'Starting…';
    try {
      const view = await api.create(req);
      const file = req.archiveUpload ? this.archive.files[0] : null;
      if (file) this.sendArchive(view.id, file);
      this.repoToken.value = '';
      $('#ns-repo-token-warn').hidden = true;
      this.archive.value = '';
      rememberKey(req.provider, this.remember.checked ? req.apiKey : null);
      const f = loadForm();
      f.provider = req.provider;
      if (req.agent) f.agent = req.agent;
      f.per = { ...(f.per || {}), [req.provider]: { model: req.model, baseUrl: req.baseUrl || '' } };
      saveForm(f);
      this.name.value = randomName();
      if (!this.remember.checked) this.key.value = '';
      this.onCreated(view);
    } catch (err) {
      this.problem.textContent = err.message;
    } finally {
      this.submitBtn.disabled = false;
      this.submitBtn.textContent = 'Start session';
    }
  }

  // sendArchive uploads a new session's archive in the background; the
  // session's boot shows it being waited for and unpacked.
  async sendArchive(id, file) {
    try {
      await uploadArchive(id, file);
      toast(`${file.name} was unpacked into the workspace`);
    } catch (err) {
      toast(`The archive could not be used: ${err.message}`, true);
    }
  }

  focus() {
    (this.key.value || this.provider.value === 'openai-compatible' ? this.picker.input : this.key).focus();
  }
}
