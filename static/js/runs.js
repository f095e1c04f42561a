// Run cards: one per task, with live progress, previews, the output gallery and the parameters used.

import { api, mediaUrl } from './api.js';
import { bytes, clear, duration, h, safeUrl, short, show } from './dom.js';

const FINAL = new Set(['completed', 'failed', 'interrupted', 'timeout']);

export class RunCard {
  constructor(list, task, { label, workflow, onRerun, onUseParams, onDismiss, onError }) {
    this.taskId = task.task_id;
    this.promptId = task.prompt_id;
    this.status = task.status || 'pending';
    this.label = label || task.workflow_name || 'workflow';
    this.workflow = workflow || null;
    this.params = task.params || {};
    this.submittedAt = Date.now();
    this.startedAt = null;
    this.finishedAt = null;
    this.executionTime = null;
    this.outputsShown = false;
    this.hooks = { onRerun, onUseParams, onDismiss, onError };

    this.statusEl = h('span', { class: 'status' });
    this.elapsedEl = h('span', { class: 'elapsed mono', text: '0.0 s' });
    this.backendEl = h('span', { class: 'muted small-text' });
    this.bar = h('progress', { class: 'progress', max: '100', value: '0' });
    this.barText = h('div', { class: 'progress-text small-text' });
    this.preview = h('img', { class: 'live-preview', alt: 'live preview', hidden: true });
    this.errorEl = h('div', { class: 'run-error', role: 'alert', hidden: true });
    this.warningsEl = h('div', { class: 'run-warnings', role: 'status', hidden: true });
    this.gallery = h('div', { class: 'gallery' });
    this.texts = h('div', { class: 'texts' });
    this.paramsEl = h('details', { class: 'params-used' });
    this.interruptBtn = h('button', { type: 'button', class: 'small danger', onclick: () => this.interrupt() }, 'Interrupt');
    this.el = h('article', { class: 'run', dataset: { taskId: this.taskId } },
      h('header', {},
        h('div', { class: 'run-title' },
          h('strong', { text: this.label }),
          h('span', { class: 'muted mono small-text', title: this.taskId, text: ` ${short(this.taskId)}` })),
        this.statusEl,
        this.elapsedEl,
        h('div', { class: 'run-actions' },
          this.interruptBtn,
          h('button', { type: 'button', class: 'small', title: 'run again with the same parameters and seed',
            onclick: () => this.hooks.onRerun && this.hooks.onRerun(this) }, 'Re-run'),
          h('button', { type: 'button', class: 'small', title: 'put these values in the form',
            onclick: () => this.hooks.onUseParams && this.hooks.onUseParams(this) }, 'Use values'),
          h('button', { type: 'button', class: 'small ghost', title: 'remove this card', 'aria-label': 'dismiss',
            onclick: () => this.dismiss() }, '×'))),
      h('div', { class: 'progress-row' }, this.bar, this.backendEl),
      this.barText,
      this.errorEl,
      this.warningsEl,
      h('div', { class: 'run-media' }, this.preview, this.gallery),
      this.texts,
      this.paramsEl);
    list.prepend(this.el);
    this.renderParams();
    this.update(task);
  }

  get final() {
    return FINAL.has(this.status);
  }

  tick() {
    if (this.final) return;
    const start = this.startedAt || this.submittedAt;
    this.elapsedEl.textContent = duration((Date.now() - start) / 1000);
    this.elapsedEl.title = this.startedAt ? 'running for' : 'waiting for';
  }

  renderParams() {
    clear(this.paramsEl);
    const entries = Object.entries(this.params || {});
    const seed = entries.filter(([k]) => /\.(seed|noise_seed)$/.test(k)).map(([, v]) => show(v));
    this.paramsEl.append(h('summary', {},
      `Parameters used (${entries.length})`,
      seed.length ? h('span', { class: 'mono seed-used', text: ` · seed ${seed.join(', ')}` }) : null));
    const table = h('table', { class: 'kv' });
    for (const [key, value] of entries) {
      table.append(h('tr', {}, h('th', { class: 'mono', text: key }), h('td', { text: show(value, 400) })));
    }
    if (!entries.length) table.append(h('tr', {}, h('td', { class: 'muted', text: 'the workflow as loaded' })));
    this.paramsEl.append(table);
  }

  setStatus(status) {
    this.status = status;
    this.statusEl.textContent = status;
    this.statusEl.className = `status status-${status}`;
    this.el.dataset.status = status;
    this.interruptBtn.hidden = this.final;
  }

  /** Apply a task_update message or a task from GET /api/task. */
  update(task) {
    if (task.status) this.setStatus(task.status);
    if (task.prompt_id) this.promptId = task.prompt_id;
    if (task.backend) this.backendEl.textContent = task.backend;
    if (task.params && Object.keys(task.params).length) { this.params = task.params; this.renderParams(); }
    if (task.started_at) this.startedAt = task.started_at * 1000;
    else if (task.status === 'running' && !this.startedAt) this.startedAt = Date.now();
    const progress = task.progress || {};
    if (typeof progress.percent === 'number') this.bar.value = progress.percent;
    this.renderProgressText(progress);
    if (task.error) this.showError(task.error);
    if (Array.isArray(task.warnings) && task.warnings.length) this.showWarnings(task.warnings);
    if (this.final) {
      if (task.status === 'completed') this.bar.value = 100;
      this.el.classList.add('done');
      const time = task.execution_time ?? this.executionTime;
      if (typeof time === 'number') {
        this.executionTime = time;
        this.elapsedEl.textContent = duration(time);
        this.elapsedEl.title = 'execution time';
      } else {
        this.elapsedEl.textContent = duration(((Date.now() - (this.startedAt || this.submittedAt)) / 1000));
      }
      if (Array.isArray(task.outputs) && !this.outputsShown) this.showOutputs(task.outputs);
      if (task.status === 'completed') this.preview.hidden = true;
    }
  }

  renderProgressText(progress) {
    const parts = [];
    if (this.status === 'queued' || this.status === 'pending') parts.push('waiting in the queue');
    if (progress.node !== undefined && progress.node !== null && !this.final) {
      const title = progress.node_title || progress.node_class || '';
      const inside = progress.display_node && progress.display_node !== String(progress.node)
        ? `#${progress.display_node} ${progress.display_title || ''} › ` : '';
      parts.push(`${inside}#${progress.node} ${title}${progress.node_class && progress.node_class !== title ? ` (${progress.node_class})` : ''}`);
    }
    if (typeof progress.value === 'number' && typeof progress.max === 'number' && !this.final) {
      parts.push(`step ${progress.value}/${progress.max}`);
    }
    if (typeof progress.nodes_total === 'number') parts.push(`nodes ${progress.nodes_done ?? 0}/${progress.nodes_total}`);
    if (typeof progress.percent === 'number') parts.push(`${Math.round(progress.percent)}%`);
    this.barText.textContent = parts.join(' · ');
  }

  /** Outputs ComfyUI dropped because they failed validation (it ran the rest): one line per node. */
  showWarnings(warnings) {
    clear(this.warningsEl);
    this.warningsEl.hidden = false;
    this.warningsEl.append(h('div', { class: 'error-type mono small-text', text: 'outputs dropped by ComfyUI' }));
    for (const warning of warnings) {
      this.warningsEl.append(h('div', { class: 'run-warning', dataset: { nodeId: String(warning.node_id ?? '') },
        text: warning.message || `node #${warning.node_id} (${warning.class_type || '?'})` }));
    }
  }

  showError(error) {
    clear(this.errorEl);
    this.errorEl.hidden = false;
    const where = error.node_id !== undefined && error.node_id !== null
      ? `node #${error.node_id}${error.node_type ? ` (${error.node_type})` : ''}: ` : '';
    const message = error.exception_message && where
      ? `${where}${error.exception_type ? `${error.exception_type}: ` : ''}${error.exception_message}`
      : `${where}${error.message || error.type || 'error'}`;
    this.errorEl.append(h('div', { class: 'error-type mono small-text', text: error.type || 'error' }), h('div', { text: message }));
    if (error.traceback) {
      const tb = Array.isArray(error.traceback) ? error.traceback.join('') : String(error.traceback);
      this.errorEl.append(h('details', {}, h('summary', {}, 'traceback'), h('pre', { text: tb })));
    }
    this.errorEl.className = `run-error ${error.type === 'interrupted' ? 'soft' : ''}`;
    if (this.hooks.onError && error.node_id !== undefined && error.node_id !== null && error.type !== 'interrupted') {
      this.hooks.onError(this, error);
    }
  }

  showPreview(dataUrl) {
    const url = safeUrl(dataUrl);
    if (!url || this.final) return;
    this.preview.src = url;
    this.preview.hidden = false;
  }

  addText(node, text) {
    this.texts.append(h('pre', { class: 'text-output' }, h('span', { class: 'muted', text: `#${node} ` }), String(text)));
  }

  showOutputs(outputs) {
    this.outputsShown = true;
    clear(this.gallery);
    for (const out of outputs) {
      const url = safeUrl(out.url);
      const caption = h('figcaption', { class: 'small-text' },
        h('span', { class: 'mono', text: out.filename }), ` · #${out.node_id} · ${bytes(out.size)}`,
        out.type && out.type !== 'output' ? ` · ${out.type}` : '');
      if (url && String(out.content_type || '').startsWith('image/')) {
        const img = h('img', { class: 'output', alt: out.filename, loading: 'lazy' });
        const link = h('a', { target: '_blank', rel: 'noopener' }, img);
        mediaUrl(url).then((src) => { img.src = src; link.href = src; }).catch(() => { img.alt = `${out.filename} (could not load)`; });
        this.gallery.append(h('figure', {}, link, caption));
      } else if (url) {
        const link = h('a', { download: out.filename, class: 'download' }, `⬇ ${out.filename}`);
        mediaUrl(url).then((src) => { link.href = src; }).catch(() => {});
        this.gallery.append(h('figure', { class: 'file' }, link, caption));
      }
    }
    if (!outputs.length && this.status === 'completed') {
      this.gallery.append(h('p', { class: 'muted small-text', text: 'no output files' }));
    }
  }

  async interrupt() {
    this.interruptBtn.disabled = true;
    try {
      const task = await api(`/api/interrupt/${encodeURIComponent(this.promptId || this.taskId)}`, { method: 'POST' });
      this.update(task);
    } catch (err) {
      this.showError({ type: 'interrupt_failed', message: err.message });
    } finally {
      this.interruptBtn.disabled = false;
    }
  }

  dismiss() {
    this.el.remove();
    if (this.hooks.onDismiss) this.hooks.onDismiss(this);
  }
}

export { FINAL };
