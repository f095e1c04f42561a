// Side panels: the backends' queue, task history and backend health.

import { api } from './api.js';
import { clear, clock, duration, h, short } from './dom.js';

export class QueuePanel {
  constructor(root, { onOpen, onChange, notify }) {
    this.root = root;
    this.onOpen = onOpen;
    this.onChange = onChange;
    this.notify = notify;
    this.body = h('div', { class: 'queue-body' });
    this.summary = h('span', { class: 'muted small-text' });
    root.append(
      h('div', { class: 'panel-tools' },
        this.summary,
        h('button', { type: 'button', class: 'small', onclick: () => this.refresh() }, 'Refresh'),
        h('button', { type: 'button', class: 'small', title: 'remove every waiting prompt from every backend',
          onclick: () => this.clearPending() }, 'Clear pending'),
        h('button', { type: 'button', class: 'small danger', title: 'clear the queue and stop what runs',
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

  render(queue) {
    clear(this.body);
    this.summary.textContent = `${queue.total_running} running · ${queue.total_pending} pending`;
    for (const [name, backend] of Object.entries(queue.backends || {})) {
      const section = h('section', { class: 'queue-backend' },
        h('h4', {}, name, backend.reachable ? null : h('span', { class: 'status status-failed', text: 'unreachable' })));
      const items = [
        ...(backend.running || []).map((i) => ({ ...i, state: 'running' })),
        ...(backend.pending || []).map((i) => ({ ...i, state: 'pending' })),
      ];
      if (!items.length) section.append(h('p', { class: 'muted small-text', text: backend.reachable ? 'empty' : backend.error || '' }));
      for (const item of items) {
        section.append(h('div', { class: 'queue-item', dataset: { promptId: item.prompt_id } },
          h('span', { class: `status status-${item.state === 'running' ? 'running' : 'queued'}`, text: item.state }),
          h('span', { class: 'mono small-text', title: item.prompt_id, text: `#${item.number ?? '?'} ${short(item.prompt_id)}` }),
          item.task_id ? h('button', { type: 'button', class: 'link small-text', onclick: () => this.onOpen(item.task_id) },
            `task ${short(item.task_id)}`) : h('span', { class: 'muted small-text', text: 'not from ComfyGate' }),
          h('button', { type: 'button', class: 'small danger', onclick: () => this.interrupt(item.task_id || item.prompt_id) },
            'Interrupt')));
      }
      this.body.append(section);
    }
  }

  async interrupt(id) {
    try {
      await api(`/api/interrupt/${encodeURIComponent(id)}`, { method: 'POST' });
    } catch (err) {
      this.notify(`interrupt failed: ${err.message}`, 'error');
    }
    this.refresh();
    this.onChange();
  }

  async clearPending() {
    try {
      const answer = await api('/api/queue/clear', { method: 'POST' });
      this.notify(`cleared ${answer.cleared.length} pending task(s)`);
    } catch (err) {
      this.notify(`clear failed: ${err.message}`, 'error');
    }
    this.refresh();
    this.onChange();
  }

  async clearAll() {
    await this.clearPending();
    const running = Object.values((this.last && this.last.backends) || {}).flatMap((b) => b.running || []);
    await Promise.all(running.map((item) => api(`/api/interrupt/${encodeURIComponent(item.task_id || item.prompt_id)}`,
      { method: 'POST' }).catch(() => null)));
    this.refresh();
    this.onChange();
  }
}

export class HistoryPanel {
  constructor(root, { onOpen, onRerun }) {
    this.root = root;
    this.onOpen = onOpen;
    this.onRerun = onRerun;
    this.filter = h('select', { 'aria-label': 'status filter', onchange: () => this.refresh() },
      h('option', { value: '', text: 'all' }),
      ...['running,queued,pending', 'completed', 'failed', 'interrupted', 'timeout'].map(
        (s) => h('option', { value: s, text: s.split(',')[0] === 'running' ? 'active' : s })));
    this.count = h('span', { class: 'muted small-text' });
    this.list = h('div', { class: 'history-list' });
    root.append(h('div', { class: 'panel-tools' }, this.count, this.filter,
      h('button', { type: 'button', class: 'small', onclick: () => this.refresh() }, 'Refresh')), this.list);
  }

  async refresh() {
    const status = this.filter.value;
    let data;
    try {
      data = await api(`/api/tasks?limit=100${status ? `&status=${encodeURIComponent(status)}` : ''}`);
    } catch (err) {
      clear(this.list).append(h('p', { class: 'muted', text: `history unavailable: ${err.message}` }));
      return;
    }
    this.count.textContent = `${data.total} task(s)`;
    clear(this.list);
    for (const task of data.tasks) {
      const images = (task.outputs || []).length;
      this.list.append(h('div', { class: 'history-item', dataset: { taskId: task.task_id } },
        h('div', { class: 'row' },
          h('span', { class: `status status-${task.status}`, text: task.status }),
          h('span', { class: 'grow ellipsis', title: task.workflow_name || 'inline workflow',
            text: task.workflow_name || 'inline workflow' }),
          h('span', { class: 'mono small-text muted', title: task.task_id, text: short(task.task_id) })),
        h('div', { class: 'row small-text muted' },
          h('span', { text: clock(task.created_at) }),
          h('span', { text: duration(task.execution_time) }),
          h('span', { text: `${images} file(s)` }),
          h('span', { class: 'grow' }),
          h('button', { type: 'button', class: 'small', onclick: () => this.onOpen(task.task_id) }, 'Open'),
          h('button', { type: 'button', class: 'small', title: 'run again with the same parameters',
            onclick: () => this.onRerun(task) }, 'Re-run')),
        task.error && task.status !== 'interrupted'
          ? h('div', { class: 'small-text error-text ellipsis', title: task.error.message || '', text: task.error.message || task.error.type })
          : null));
    }
    if (!data.tasks.length) this.list.append(h('p', { class: 'muted', text: 'no tasks yet' }));
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
