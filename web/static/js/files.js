// The workspace in the user's hands: a panel beside a session's conversation
// with its files (browse, open a text file highlighted, download, upload by
// drag and drop or the picker, download the whole workspace) and its changes
// since the session began (the diff, coloured like tool output). Everything
// shown comes from the agent's sandbox: it goes into the page as text nodes
// and highlight.js spans only, never as markup, and downloads are files the
// server marks as attachments.
import { api, APIError, toLogin } from './api.js';
import { h, icon, iconButton, debounce, toast, fmtTime, announce } from './util.js';
import { highlightInto } from './hl.js';
import { diffFragment } from './ansi.js';

// A file larger than this is offered for download instead of shown.
const VIEW_MAX = 1 << 20;

const LANGS = {
  go: 'go', js: 'javascript', mjs: 'javascript', cjs: 'javascript', jsx: 'javascript', ts: 'typescript', tsx: 'typescript',
  py: 'python', rs: 'rust', c: 'c', h: 'c', cc: 'cpp', cpp: 'cpp', cxx: 'cpp', hpp: 'cpp', java: 'java',
  css: 'css', html: 'xml', htm: 'xml', xml: 'xml', svg: 'xml', json: 'json', yml: 'yaml', yaml: 'yaml',
  md: 'markdown', markdown: 'markdown', sh: 'bash', bash: 'bash', zsh: 'bash', sql: 'sql', ini: 'ini', toml: 'ini',
  cfg: 'ini', conf: 'ini', diff: 'diff', patch: 'diff', mk: 'makefile',
};

// language guesses a highlight.js language from a file name.
export function language(name) {
  const base = name.split('/').pop();
  if (/^(GNU)?makefile$/i.test(base)) return 'makefile';
  if (/^Dockerfile/i.test(base)) return 'dockerfile';
  const m = /\.([A-Za-z0-9]+)$/.exec(base);
  return (m && LANGS[m[1].toLowerCase()]) || '';
}

export function fmtBytes(n) {
  n = Number(n) || 0;
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
  if (n < 1 << 30) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${(n / 1073741824).toFixed(1)} GiB`;
}

const join = (dir, name) => (dir ? `${dir}/${name}` : name);

// upload PUTs a file (or any blob) to url, reporting progress (0..1). The
// answer is parsed JSON; failures reject with an APIError.
export function upload(url, blob, onProgress = () => {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', url);
    xhr.withCredentials = true;
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onerror = () => reject(new APIError(0, 'The upload failed: the server cannot be reached'));
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { data = null; }
      if (xhr.status === 401) {
        toLogin();
        reject(new APIError(401, 'Signed out'));
      } else if (xhr.status < 200 || xhr.status > 299) {
        reject(new APIError(xhr.status, data && typeof data.error === 'string' ? data.error : `upload: HTTP ${xhr.status}`));
      } else {
        resolve(data);
      }
    };
    xhr.send(blob);
  });
}

// uploadArchive hands a new session (created with archiveUpload) the
// archive its workspace starts from.
export function uploadArchive(id, file, onProgress) {
  return upload(api.archiveURL(id), file, onProgress);
}

export class WorkspacePanel {
  // view is the SessionView: { id, app: { platform } }.
  constructor(view) {
    this.view = view;
    this.id = view.id;
    this.dir = '';
    this.tab = 'files';
    this.opened = null; // the file shown: { path, name }
    this.usable = false;
    this.stale = { files: true, changes: true };
    this.seq = 0; // the latest listing's request, so an older answer is dropped
    this.build();
    this.refreshSoon = debounce(() => this.refresh(), 500);
  }

  build() {
    const id = this.id;
    this.button = h('button', { type: 'button', class: 'btn ghost small open-files', 'aria-pressed': 'false', 'aria-controls': `ws-${id}`,
      title: 'The workspace: its files and what changed', onclick: () => this.toggle() }, icon('folder'), h('span', { class: 'label', text: 'Files' }));
    this.tabBtns = {};
    const tab = (name, label) => {
      const b = h('button', { type: 'button', role: 'tab', class: 'ws-tab', id: `ws-tab-${name}-${id}`, 'aria-selected': 'false',
        'aria-controls': `ws-${name}-${id}`, onclick: () => this.show(name) }, label);
      this.tabBtns[name] = b;
      return b;
    };
    this.tarLink = h('a', { class: 'btn ghost small ws-tarball', href: api.workspaceURL(id), download: '', title: 'Download the whole workspace as a .tar.gz' },
      icon('download'), h('span', { class: 'label', text: 'Workspace' }));
    const head = h('div', { class: 'ws-head' },
      h('h2', { class: 'sr-only', text: 'Workspace' }),
      h('div', { class: 'ws-tabs', role: 'tablist', 'aria-label': 'Workspace' }, tab('files', 'Files'), tab('changes', 'Changes')),
      h('span', { class: 'grow' }), this.tarLink,
      iconButton('x', 'Close the workspace panel', () => this.toggle(false)));
    this.note = h('p', { class: 'ws-note', role: 'status' });

    // Files: where we are, what is there, and a file opened.
    this.crumbs = h('nav', { class: 'ws-crumbs', 'aria-label': 'Folder' });
    this.picker = h('input', { type: 'file', multiple: true, class: 'sr-only', tabindex: '-1', 'aria-hidden': 'true' });
    this.picker.addEventListener('change', () => { this.uploadFiles([...this.picker.files]); this.picker.value = ''; });
    const bar = h('div', { class: 'ws-bar' }, this.crumbs, h('span', { class: 'grow' }),
      iconButton('refresh', 'Refresh', () => this.refresh()),
      h('button', { type: 'button', class: 'btn ghost small ws-upload', title: 'Upload files into this folder (or drop them here)', onclick: () => this.picker.click() },
        icon('upload'), h('span', { class: 'label', text: 'Upload' })),
      this.picker);
    this.list = h('ul', { class: 'ws-list', 'aria-label': 'Files' });
    this.progress = h('div', { class: 'ws-progress', role: 'status', hidden: true });
    this.viewer = h('div', { class: 'ws-viewer', hidden: true });
    this.drop = h('div', { class: 'ws-drop', hidden: true }, icon('upload'), h('span', { text: 'Drop files to upload them here' }));
    this.filesEl = h('div', { class: 'ws-pane', id: `ws-files-${id}`, role: 'tabpanel', 'aria-labelledby': `ws-tab-files-${id}` },
      bar, this.progress, this.list, this.viewer, this.drop);
    this.dropTarget(this.filesEl);

    // Changes.
    this.changesSummary = h('p', { class: 'ws-summary' });
    this.changesList = h('ul', { class: 'ws-changed', 'aria-label': 'Changed files' });
    this.diff = h('pre', { class: 'tool-output diff ws-diff', tabindex: '0', 'aria-label': 'Diff' });
    this.changesEl = h('div', { class: 'ws-pane', id: `ws-changes-${id}`, role: 'tabpanel', 'aria-labelledby': `ws-tab-changes-${id}`, hidden: true },
      h('div', { class: 'ws-bar' }, this.changesSummary, h('span', { class: 'grow' }), iconButton('refresh', 'Refresh', () => this.refresh())),
      this.changesList, this.diff);

    this.el = h('aside', { class: 'ws-panel', id: `ws-${id}`, 'aria-label': 'Workspace', hidden: true },
      head, this.note, this.filesEl, this.changesEl);
    this.setTab('files');
  }

  // dropTarget makes el take files dropped on it.
  dropTarget(el) {
    let depth = 0;
    const files = (e) => e.dataTransfer && [...e.dataTransfer.types].includes('Files');
    el.addEventListener('dragenter', (e) => {
      if (!files(e)) return;
      e.preventDefault();
      depth++;
      this.drop.hidden = !this.usable;
    });
    el.addEventListener('dragover', (e) => {
      if (!files(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = this.usable ? 'copy' : 'none';
    });
    el.addEventListener('dragleave', () => {
      if (--depth <= 0) { depth = 0; this.drop.hidden = true; }
    });
    el.addEventListener('drop', (e) => {
      if (!files(e)) return;
      e.preventDefault();
      depth = 0;
      this.drop.hidden = true;
      const items = [...(e.dataTransfer.items || [])];
      if (items.some((it) => it.webkitGetAsEntry && it.webkitGetAsEntry()?.isDirectory)) {
        toast('Folders cannot be dropped: drop their files, or start a session from a .zip or .tar.gz of the folder.', true);
      }
      const list = [...e.dataTransfer.files].filter((f, i) => !(items[i]?.webkitGetAsEntry && items[i].webkitGetAsEntry()?.isDirectory));
      if (list.length) this.uploadFiles(list);
    });
  }

  toggle(open = this.el.hidden) {
    this.el.hidden = !open;
    this.view.el.classList.toggle('ws-open', open);
    this.button.setAttribute('aria-pressed', String(open));
    if (open) {
      this.refresh();
      this.tabBtns[this.tab].focus();
    } else {
      this.button.focus();
    }
  }

  get isOpen() { return !this.el.hidden; }

  setTab(name) {
    this.tab = name;
    for (const [n, b] of Object.entries(this.tabBtns)) {
      b.setAttribute('aria-selected', String(n === name));
      b.classList.toggle('active', n === name);
    }
    this.filesEl.hidden = name !== 'files';
    this.changesEl.hidden = name !== 'changes';
  }

  show(name) {
    this.setTab(name);
    if (this.stale[name]) this.refresh();
  }

  // setState follows the session: the workspace is there while it runs.
  setState(state) {
    const usable = state === 'active' || state === 'busy';
    const was = this.usable;
    this.usable = usable;
    this.filesEl.classList.toggle('unusable', !usable);
    this.tarLink.hidden = !usable;
    if (usable) {
      this.note.textContent = '';
      if (!was && this.isOpen) this.refresh();
      return;
    }
    const why = {
      creating: 'The sandbox is starting: its files can be seen once it is ready.',
      booting: 'The sandbox is starting: its files can be seen once it is ready.',
      paused: 'The session is paused: send a message (or Resume) to see its files again.',
      pausing: 'The session is pausing.', resuming: 'The session is resuming…',
      stopping: 'The session is ending.', stopped: 'The session has ended: its sandbox and files are gone.',
      error: 'The session has ended: its sandbox and files are gone.',
    }[state] || '';
    this.note.textContent = why;
  }

  // onEvent refreshes what is shown when the agent may have changed files.
  onEvent(type) {
    if (type !== 'tool_result' && type !== 'agent_idle') return;
    this.stale = { files: true, changes: true };
    if (this.isOpen && this.usable) this.refreshSoon();
  }

  refresh() {
    if (!this.usable) return;
    if (this.tab === 'changes') return this.loadChanges();
    if (this.opened) return this.openFile(this.opened.path, this.opened.size, true);
    return this.load(this.dir);
  }

  async load(dir) {
    const seq = ++this.seq;
    let l;
    try {
      l = await api.files(this.id, dir);
    } catch (err) {
      if (seq !== this.seq) return;
      if (err.status === 404 && dir) { // the folder is gone: go up
        return this.load(dir.split('/').slice(0, -1).join('/'));
      }
      this.note.textContent = err.message;
      return;
    }
    if (seq !== this.seq) return;
    this.stale.files = false;
    this.note.textContent = '';
    this.dir = l.path || '';
    this.closeFile(false);
    this.renderCrumbs();
    this.renderList(l);
  }

  renderCrumbs() {
    const parts = this.dir ? this.dir.split('/') : [];
    const crumbs = [h('button', { type: 'button', class: 'ws-crumb', onclick: () => this.load(''), 'aria-label': 'The workspace' }, icon('folder'), 'workspace')];
    parts.forEach((p, i) => {
      const path = parts.slice(0, i + 1).join('/');
      crumbs.push(h('span', { class: 'ws-sep', 'aria-hidden': 'true', text: '/' }),
        h('button', { type: 'button', class: 'ws-crumb', onclick: () => this.load(path), 'aria-current': i === parts.length - 1 ? 'location' : null, text: p }));
    });
    this.crumbs.replaceChildren(...crumbs);
  }

  renderList(l) {
    const entries = [...(l.entries || [])].sort((a, b) =>
      (a.type === 'dir' ? 0 : 1) - (b.type === 'dir' ? 0 : 1) || a.name.localeCompare(b.name));
    const rows = [];
    if (this.dir) {
      const up = this.dir.split('/').slice(0, -1).join('/');
      rows.push(h('li', { class: 'ws-row' }, h('button', { type: 'button', class: 'ws-entry dir', onclick: () => this.load(up) }, icon('folder'), '..')));
    }
    for (const e of entries) rows.push(this.row(e));
    if (!entries.length) rows.push(h('li', { class: 'ws-empty', text: this.dir ? 'This folder is empty.' : 'The workspace is empty. Drop files here to upload them.' }));
    if (l.truncated) rows.push(h('li', { class: 'ws-empty', text: 'The folder holds more entries than can be listed; download the workspace for all of them.' }));
    this.list.replaceChildren(...rows);
  }

  row(e) {
    const path = join(this.dir, e.name);
    const kinds = { dir: 'folder', file: 'file', symlink: 'file' };
    const name = h('span', { class: 'ws-name', text: e.name });
    const meta = h('span', { class: 'ws-meta' },
      e.type === 'dir' ? '' : fmtBytes(e.size), h('span', { class: 'ws-time', text: fmtTime(e.mtime) }));
    let main;
    if (e.escaped) {
      main = h('span', { class: 'ws-entry odd', title: 'This name is not plain text: it is shown escaped and cannot be opened here' }, icon('warn'), name);
    } else if (e.type === 'dir') {
      main = h('button', { type: 'button', class: 'ws-entry dir', onclick: () => this.load(path) }, icon('folder'), name);
    } else if (e.type === 'file' || e.type === 'symlink') {
      main = h('button', { type: 'button', class: `ws-entry ${e.type}`, title: e.type === 'symlink' ? 'A symbolic link' : null,
        onclick: () => this.openFile(path, e.size) }, icon(kinds[e.type]), name);
    } else {
      main = h('span', { class: 'ws-entry other', title: 'Not a regular file (a FIFO, socket or device)' }, icon('file'), name);
    }
    const actions = h('span', { class: 'ws-actions' });
    if (!e.escaped && (e.type === 'file' || e.type === 'symlink')) {
      actions.append(h('a', { class: 'btn ghost icon-only small', href: api.fileURL(this.id, path), download: e.name,
        'aria-label': `Download ${e.name}`, title: 'Download' }, icon('download')));
    }
    if (e.type === 'symlink') name.append(h('span', { class: 'ws-link', text: ' →' }));
    return h('li', { class: 'ws-row', dataset: { name: e.name, type: e.type } }, main, meta, actions);
  }

  // openFile shows a text file, highlighted; other files are offered for
  // download.
  async openFile(path, size, again = false) {
    const name = path.split('/').pop();
    this.opened = { path, name, size };
    const head = h('div', { class: 'ws-bar ws-file-head' },
      h('button', { type: 'button', class: 'btn ghost small ws-back', onclick: () => this.closeFile() }, '← Files'),
      h('span', { class: 'ws-path', text: path, title: path }), h('span', { class: 'grow' }),
      h('a', { class: 'btn ghost small', href: api.fileURL(this.id, path), download: name }, icon('download'), h('span', { class: 'label', text: 'Download' })));
    const body = h('div', { class: 'ws-file-body' });
    this.viewer.replaceChildren(head, body);
    this.viewer.hidden = false;
    this.list.hidden = true;
    if (size > VIEW_MAX) {
      body.append(h('p', { class: 'ws-empty', text: `This file is ${fmtBytes(size)}: too large to show here. Download it instead.` }));
      return;
    }
    if (!again) body.append(h('p', { class: 'ws-empty', text: 'Loading…' }));
    let buf;
    try {
      const resp = await fetch(api.fileURL(this.id, path), { credentials: 'same-origin', cache: 'no-store' });
      if (resp.status === 401) return toLogin();
      if (!resp.ok) {
        let msg = `HTTP ${resp.status}`;
        try { msg = (await resp.json()).error || msg; } catch { /* not JSON */ }
        throw new Error(msg);
      }
      buf = new Uint8Array(await resp.arrayBuffer());
    } catch (err) {
      body.replaceChildren(h('p', { class: 'ws-empty bad', text: `It cannot be opened: ${err.message}` }));
      return;
    }
    if (this.opened?.path !== path) return; // another file was opened meanwhile
    let text = null;
    if (buf.length <= VIEW_MAX && !buf.subarray(0, 8192).includes(0)) {
      try { text = new TextDecoder('utf-8', { fatal: true }).decode(buf); } catch { text = null; }
    }
    if (text === null) {
      body.replaceChildren(h('p', { class: 'ws-empty', text: `A binary file (${fmtBytes(buf.length)}): download it to open it.` }));
      return;
    }
    const code = h('code');
    const lang = language(name);
    highlightInto(code, text, lang);
    body.replaceChildren(h('pre', { class: 'ws-code', tabindex: '0', 'aria-label': `Contents of ${name}`, dataset: { lang: lang || 'text' } }, code));
    announce(`${name} opened`);
  }

  closeFile(reload = true) {
    const was = this.opened;
    this.opened = null;
    this.viewer.hidden = true;
    this.viewer.replaceChildren();
    this.list.hidden = false;
    if (reload && was && this.stale.files) this.load(this.dir);
  }

  async uploadFiles(files) {
    if (!files.length) return;
    if (!this.usable) {
      toast('The session is not running: its files cannot be changed now.', true);
      return;
    }
    const max = Number(this.view.app.platform?.maxUploadBytes) || 0;
    const dir = this.dir;
    this.progress.hidden = false;
    let done = 0;
    for (const f of files) {
      if (max && f.size > max) {
        toast(`${f.name} is ${fmtBytes(f.size)}: more than the ${fmtBytes(max)} an upload may be.`, true);
        continue;
      }
      const path = join(dir, f.name);
      this.progress.textContent = `Uploading ${f.name}…`;
      try {
        await upload(api.fileURL(this.id, path), f, (p) => { this.progress.textContent = `Uploading ${f.name}… ${Math.round(p * 100)}%`; });
        done++;
      } catch (err) {
        toast(`${f.name}: ${err.message}`, true);
      }
    }
    this.progress.hidden = true;
    if (done) {
      toast(done === 1 ? 'Uploaded 1 file' : `Uploaded ${done} files`);
      this.stale.changes = true;
      if (this.dir === dir && !this.opened) this.load(dir);
    }
  }

  async loadChanges() {
    this.changesSummary.textContent = 'Looking…';
    let c;
    try {
      c = await api.changes(this.id);
    } catch (err) {
      this.changesSummary.textContent = '';
      this.note.textContent = err.message;
      return;
    }
    this.stale.changes = false;
    this.note.textContent = '';
    const files = c.files || [];
    const n = files.length;
    const since = c.kind === 'git' && c.base ? ` since ${c.base.slice(0, 10)}` : ' since the session began';
    this.changesSummary.textContent = n ? `${n} ${n === 1 ? 'file' : 'files'} changed${since}` : `Nothing changed${since}`;
    this.changesSummary.title = c.kind === 'git' ? 'Compared with the commit the session began at (git), untracked files included' : '';
    const rows = files.map((f) => h('li', { class: `ws-change s-${f.status}` },
      h('span', { class: `ws-status ${f.status}`, text: f.status }), h('span', { class: 'ws-name', text: f.path })));
    if (c.note) rows.push(h('li', { class: 'ws-empty', text: c.note[0].toUpperCase() + c.note.slice(1) + '.' }));
    this.changesList.replaceChildren(...rows);
    this.diff.hidden = !c.diff;
    this.diff.replaceChildren(diffFragment(c.diff || ''));
  }

  destroy() {
    this.seq++;
  }
}
