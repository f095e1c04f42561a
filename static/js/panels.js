// Side panels: the backends' queue and the tasks ComfyGate holds, task history, backend health.

import { api, mediaUrl } from './api.js';
import { clear, clock, duration, h, safeUrl, short } from './dom.js';
import { kindOf } from './outputs.js';

export class QueuePanel {
  constructor(root, { onOpen, onChange, notify, confirm }) {
    this.root = root;
    this.onOpen = onOpen;
    this.onChange = onChange;
    this.notify = notify;
    this.confirm = confirm || ((text) => window.confirm(text));
    this.body = h('div', { class: 'queue-body' });
    this.summary = h('span', { class: 'muted small-text queue-summary' });
    root.append(
      h('div', { class: 'panel-tools' },
        this.summary,
        h('button', { type: 'button', class: 'small', onclick: () => this.refresh() }, 'Refresh'),
        h('button', { type: 'button', class: 'small', title: 'cancel ComfyGate\'s waiting tasks (other clients\' prompts stay)',
          onclick: () => this.clearPending() }, 'Clear pending'),
        h('button', { type: 'button', class: 'small danger', title: 'cancel ComfyGate\'s waiting tasks and stop its running ones',
          onclick: () => this.clearAll() }, 'Clear all')),
      this.body);
    this.last = null;
  }

  async refresh() {
    try {
      this.last = await api('/api/queue');
    } catch (err) {
      clear(this.body).append(h('p', { class: 'muted', text: `queue unavailable: ${err.message}` }));
      return;
    }
    this.render(this.last);
  }

  /** Every item with its state: held (by ComfyGate), pending (in a backend's queue), running. */
  items(queue = this.last) {
    const all = [];
    for (const held of ((queue && queue.comfygate) || {}).pending || []) {
      all.push({ ...held, state: 'held', backend: held.pinned_backend || null });
    }
    for (const [name, backend] of Object.entries((queue && queue.backends) || {})) {
      for (const i of backend.running || []) all.push({ ...i, state: 'running', backend: name });
      for (const i of backend.pending || []) all.push({ ...i, state: 'pending', backend: name });
    }
    return all;
  }

  render(queue) {
    clear(this.body);
    const held = ((queue.comfygate || {}).pending || []).length;
    this.summary.textContent = `${queue.total_running} running · ${queue.total_pending} pending`
      + ` · ${held} held by ComfyGate`;
    const row = (item) => {
      const ours = Boolean(item.task_id);
      const label = { held: 'held', pending: 'queued', running: 'running' }[item.state];
      return h('div', { class: 'queue-item', dataset: { promptId: item.prompt_id || '', taskId: item.task_id || '', state: item.state } },
        h('span', { class: `status status-${item.state === 'running' ? 'running' : item.state === 'held' ? 'pending' : 'queued'}`, text: label }),
        item.state === 'held'
          ? h('span', { class: 'mono small-text', text: item.backend ? `for ${item.backend}` : 'any backend' })
          : h('span', { class: 'mono small-text', title: item.prompt_id, text: `#${item.number ?? '?'} ${short(item.prompt_id)}` }),
        ours ? h('button', { type: 'button', class: 'link small-text', onclick: () => this.onOpen(item.task_id) },
          `task ${short(item.task_id)}`) : h('span', { class: 'muted small-text', text: 'another client\'s prompt' }),
        ours ? h('button', { type: 'button', class: 'small danger', onclick: () => this.cancel([item]) },
          item.state === 'running' ? 'Interrupt' : 'Cancel') : null);
    };
    const heldItems = this.items(queue).filter((i) => i.state === 'held');
    if (heldItems.length) {
      const section = h('section', { class: 'queue-backend queue-held' },
        h('h4', {}, 'Held by ComfyGate', h('span', { class: 'muted small-text', text: 'waiting for a backend' })));
      for (const item of heldItems) section.append(row(item));
      this.body.append(section);
    }
    for (const [name, backend] of Object.entries(queue.backends || {})) {
      const section = h('section', { class: 'queue-backend' },
        h('h4', {}, name, backend.reachable ? null : h('span', { class: 'status status-failed', text: 'unreachable' })));
      const byNumber = (a, b) => (a.number ?? 0) - (b.number ?? 0);
      const items = [
        ...(backend.running || []).slice().sort(byNumber).map((i) => ({ ...i, state: 'running' })),
        ...(backend.pending || []).slice().sort(byNumber).map((i) => ({ ...i, state: 'pending' })),
      ];
      if (!items.length) section.append(h('p', { class: 'muted small-text', text: backend.reachable ? 'empty' : backend.error || '' }));
      for (const item of items) section.append(row(item));
      this.body.append(section);
    }
  }

  async cancel(items) {
    const results = await Promise.all(items.map((item) => api(`/api/interrupt/${encodeURIComponent(item.task_id)}`, { method: 'POST' })
      .then(() => true, (err) => { this.notify(`could not stop task ${short(item.task_id)}: ${err.message}`, 'error'); return false; })));
    await this.refresh();
    this.onChange();
    return results.filter(Boolean).length;
  }

  async clearPending({ running = false } = {}) {
    await this.refresh();
    const all = this.items();
    const waiting = all.filter((i) => i.task_id && i.state !== 'running');
    const stop = running ? all.filter((i) => i.task_id && i.state === 'running') : [];
    const foreign = all.filter((i) => !i.task_id).length;
    if (!waiting.length && !stop.length) {
      this.notify(foreign ? `nothing of ComfyGate's to clear (${foreign} prompt(s) of other clients left alone)` : 'the queue is empty');
      return;
    }
    const held = waiting.filter((i) => i.state === 'held').length;
    const parts = [`${waiting.length} waiting task(s) of ComfyGate (${waiting.length - held} queued on backends, ${held} held)`];
    if (running) parts.push(`stop ${stop.length} running task(s)`);
    const text = `Cancel ${parts.join(' and ')}?${foreign ? ` ${foreign} prompt(s) from other clients stay in the queue.` : ''}`;
    if (!this.confirm(text)) return;
    const done = await this.cancel([...waiting, ...stop]);
    this.notify(`cancelled ${done} task(s)${foreign ? `; ${foreign} prompt(s) of other clients left alone` : ''}`);
  }

  async clearAll() {
    await this.clearPending({ running: true });
  }
}

const PAGE = 25;

/** A prompt-like text from a task's params, for the history list. */
function snippet(task) {
  const strings = Object.entries(task.params || {}).filter(([, v]) => typeof v === 'string' && v.trim().length > 2);
  const prompt = strings.find(([k]) => /text|prompt/i.test(k)) || strings[0];
  return prompt ? prompt[1].trim().slice(0, 140) : '';
}

export class HistoryPanel {
  constructor(root, { onOpen, onRerun, onLoad, labels }) {
    this.root = root;
    this.onOpen = onOpen;
    this.onRerun = onRerun;
    this.onLoad = onLoad;
    this.labels = labels || (() => ({}));
    this.offset = 0;
    this.filter = h('select', { 'aria-label': 'status filter', onchange: () => { this.offset = 0; this.refresh(); } },
      h('option', { value: '', text: 'all' }),
      ...['running,queued,pending', 'completed', 'failed', 'interrupted', 'timeout'].map(
        (s) => h('option', { value: s, text: s.split(',')[0] === 'running' ? 'active' : s })));
    this.search = h('input', { type: 'search', class: 'grow history-search', placeholder: 'search name, prompt, id…',
      'aria-label': 'search history', spellcheck: 'false' });
    let timer = null;
    this.search.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(() => { this.offset = 0; this.refresh(); }, 250); });
    this.count = h('span', { class: 'muted small-text history-count' });
    this.prev = h('button', { type: 'button', class: 'small', 'aria-label': 'newer tasks', onclick: () => this.page(-1) }, '‹ Newer');
    this.next = h('button', { type: 'button', class: 'small', 'aria-label': 'older tasks', onclick: () => this.page(1) }, 'Older ›');
    this.list = h('div', { class: 'history-list' });
    root.append(h('div', { class: 'panel-tools' }, this.count, this.search, this.filter,
      h('button', { type: 'button', class: 'small', onclick: () => this.refresh() }, 'Refresh')),
    this.list,
    h('div', { class: 'row history-pager' }, this.prev, h('span', { class: 'grow' }), this.next));
  }

  page(delta) {
    this.offset = Math.max(0, this.offset + delta * PAGE);
    this.refresh();
  }

  async refresh() {
    const status = this.filter.value;
    const q = this.search.value.trim();
    let data;
    try {
      const query = new URLSearchParams({ limit: String(PAGE), offset: String(this.offset) });
      if (status) query.set('status', status);
      if (q) query.set('q', q);
      data = await api(`/api/tasks?${query}`);
    } catch (err) {
      clear(this.list).append(h('p', { class: 'muted', text: `history unavailable: ${err.message}` }));
      return;
    }
    if (this.offset && this.offset >= data.total) { this.offset = Math.max(0, Math.floor((data.total - 1) / PAGE) * PAGE); return this.refresh(); }
    const first = data.total ? this.offset + 1 : 0;
    const last = Math.min(this.offset + data.tasks.length, data.total);
    this.count.textContent = `${first}–${last} of ${data.total} task(s)`;
    this.prev.disabled = this.offset === 0;
    this.next.disabled = last >= data.total;
    const labels = this.labels();
    clear(this.list);
    for (const task of data.tasks) this.list.append(this.item(task, labels[task.task_id]));
    if (!data.tasks.length) this.list.append(h('p', { class: 'muted', text: q || status ? 'no task matches' : 'no tasks yet' }));
  }

  item(task, label) {
    const outputs = task.outputs || [];
    const image = outputs.find((o) => kindOf(o) === 'image');
    const thumb = h('div', { class: 'history-thumb' });
    if (image && safeUrl(image.url)) {
      const img = h('img', { alt: image.filename, loading: 'lazy' });
      mediaUrl(image.url).then((src) => { img.src = src; }).catch(() => {});
      thumb.append(img);
    } else {
      const other = outputs[0] ? kindOf(outputs[0]) : null;
      thumb.append(h('span', { class: 'muted small-text', text: other || (task.status === 'completed' ? 'text' : '—') }));
    }
    const name = label || task.workflow_name || 'inline workflow';
    const text = snippet(task);
    return h('div', { class: 'history-item', dataset: { taskId: task.task_id } },
      thumb,
      h('div', { class: 'history-main' },
        h('div', { class: 'row' },
          h('span', { class: `status status-${task.status}`, text: task.status }),
          h('span', { class: 'grow ellipsis history-name', title: name, text: name }),
          h('span', { class: 'mono small-text muted', title: task.task_id, text: short(task.task_id) })),
        text ? h('div', { class: 'small-text ellipsis history-snippet', title: text, text }) : null,
        h('div', { class: 'row small-text muted' },
          h('span', { text: clock(task.created_at) }),
          h('span', { text: duration(task.execution_time) }),
          h('span', { text: `${outputs.length} file(s)` }),
          h('span', { class: 'grow' }),
          h('button', { type: 'button', class: 'small', onclick: () => this.onOpen(task.task_id) }, 'Open'),
          h('button', { type: 'button', class: 'small', title: 'run this task\'s own workflow again with the same values',
            onclick: () => this.onRerun(task) }, 'Re-run'),
          h('button', { type: 'button', class: 'small', title: 'load this task\'s workflow and values into the form',
            onclick: () => this.onLoad(task) }, 'Load')),
        task.error && task.status !== 'interrupted'
          ? h('div', { class: 'small-text error-text ellipsis', title: task.error.message || '', text: task.error.message || task.error.type })
          : null));
  }
}

export class HealthPanel {
  constructor(root, pills) {
    this.root = root;
    this.pills = pills;
    this.backends = new Map();
    this.summary = h('p', { class: 'small-text' });
    this.list = h('div', { class: 'backend-list' });
    root.append(this.summary, this.list);
  }

  setHealth(health) {
    this.backends.clear();
    for (const b of health.backends || []) this.backends.set(b.name, b);
    const tasks = Object.entries(health.tasks || {}).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(', ');
    this.summary.textContent = `ComfyGate: ${health.status}. Tasks: ${tasks || 'none'}. Listeners: ${health.listeners ?? '?'}.`;
    this.render();
  }

  updateBackend(message) {
    const old = this.backends.get(message.name) || {};
    const { type: _type, ...rest } = message;
    this.backends.set(message.name, { ...old, ...rest });
    this.render();
  }

  setQueue(name, remaining) {
    const b = this.backends.get(name);
    if (b) { b.queue_remaining = remaining; this.render(); }
  }

  get status() {
    const all = [...this.backends.values()];
    const up = all.filter((b) => b.healthy).length;
    if (!all.length) return 'unknown';
    return up === all.length ? 'ok' : up ? 'degraded' : 'down';
  }

  downBackends() {
    return [...this.backends.values()].filter((b) => !b.healthy);
  }

  render() {
    clear(this.list);
    clear(this.pills);
    for (const b of this.backends.values()) {
      const state = b.healthy ? 'up' : 'down';
      this.pills.append(h('span', { class: `pill pill-${state}`, title: `${b.kind || ''} ${b.url || ''}`.trim(),
        text: `${b.name} · ${state}${b.healthy ? ` · queue ${b.queue_remaining ?? 0}` : ''}` }));
      this.list.append(h('div', { class: `backend backend-${state}` },
        h('div', { class: 'row' },
          h('span', { class: `dot dot-${state}` }),
          h('strong', { text: b.name }),
          h('span', { class: 'muted small-text', text: b.kind || '' }),
          h('span', { class: 'grow' }),
          h('span', { class: 'small-text', text: state })),
        h('div', { class: 'mono small-text muted ellipsis', title: b.url || '', text: b.url || '' }),
        h('div', { class: 'small-text' },
          `queue ${b.queue_remaining ?? 0} · in flight ${b.inflight ?? 0}`,
          b.last_error ? h('div', { class: 'error-text', text: b.last_error }) : null)));
    }
  }
}
