// Run cards: one per task, with live progress, previews, every output shown and the parameters used.

import { api } from './api.js';
import { clear, duration, h, safeUrl, short, show } from './dom.js';
import { kindOf, renderOutputs, textsOf } from './outputs.js';

const FINAL = new Set(['completed', 'failed', 'interrupted', 'timeout']);
const SEED_KEY = /\.(seed|noise_seed)$/;

export class RunCard {
  constructor(list, task, { label, workflow, lightbox, hooks = {}, append = false }) {
    this.taskId = task.task_id;
    this.promptId = task.prompt_id;
    this.status = task.status || 'pending';
    this.label = label || task.workflow_name || 'workflow';
    this.workflow = workflow || task.workflow || null; // the task's own API workflow, when known
    this.params = task.params || {};
    this.lightbox = lightbox;
    this.submittedAt = task.created_at ? task.created_at * 1000 : Date.now();
    this.startedAt = null;
    this.executionTime = null;
    this.outputsShown = false;
    this.textsShown = new Set();
    this.textFileNodes = new Set(); // nodes whose text is also an output file (.txt): shown once, from the file
    this.frames = [];
    this.progress = {};
    this.hooks = hooks;

    this.statusEl = h('span', { class: 'status' });
    this.elapsedEl = h('span', { class: 'elapsed mono', text: '0.0 s' });
    this.backendEl = h('span', { class: 'muted small-text' });
    this.bar = h('progress', { class: 'progress', max: '100', value: '0', 'aria-label': 'progress' });
    this.barText = h('div', { class: 'progress-text small-text' });
    this.preview = h('img', { class: 'live-preview', alt: 'live preview', hidden: true });
    this.errorEl = h('div', { class: 'run-error', role: 'alert', hidden: true });
    this.warningsEl = h('div', { class: 'run-warnings', role: 'status', hidden: true });
    this.noteEl = h('div', { class: 'run-note small-text', hidden: true });
    this.gallery = h('div', { class: 'gallery' });
    this.framesEl = h('div', { class: 'gallery ws-frames', hidden: true });
    this.texts = h('div', { class: 'texts' });
    this.paramsEl = h('details', { class: 'params-used' });
    this.interruptBtn = h('button', { type: 'button', class: 'small danger', onclick: () => this.interrupt() }, 'Interrupt');
    const hook = (name) => () => this.hooks[name] && this.hooks[name](this);
    this.el = h('article', { class: 'run', dataset: { taskId: this.taskId }, 'aria-label': `run ${short(this.taskId)}` },
      h('header', {},
        h('div', { class: 'run-title' },
          h('strong', { class: 'run-label', title: this.label, text: this.label }),
          h('span', { class: 'muted mono small-text', title: this.taskId, text: ` ${short(this.taskId)}` })),
        this.statusEl,
        this.elapsedEl,
        h('div', { class: 'run-actions' },
          this.interruptBtn,
          h('button', { type: 'button', class: 'small', title: 'run this task\'s own workflow again, same values and seed',
            onclick: hook('onRerun') }, 'Re-run'),
          h('button', { type: 'button', class: 'small', title: 'run this task\'s own workflow again with a new random seed',
            onclick: hook('onRerunNewSeed') }, 'New seed'),
          h('button', { type: 'button', class: 'small', title: 'load this task\'s workflow and all of its values into the form',
            onclick: hook('onLoadIntoForm') }, 'Load into form'),
          h('button', { type: 'button', class: 'small', title: 'put this task\'s values in the loaded workflow\'s form',
            onclick: hook('onUseParams') }, 'Use values'),
          h('button', { type: 'button', class: 'small ghost', title: 'remove this card', 'aria-label': 'dismiss',
            onclick: () => this.dismiss() }, '×'))),
      h('div', { class: 'progress-row' }, this.bar, this.backendEl),
      this.barText,
      this.errorEl,
      this.warningsEl,
      this.noteEl,
      h('div', { class: 'run-media' }, this.preview, this.gallery),
      this.framesEl,
      this.texts,
      this.paramsEl);
    if (append) list.append(this.el);
    else list.prepend(this.el);
    this.renderParams();
    this.update(task);
  }

  get final() {
    return FINAL.has(this.status);
  }

  get percent() {
    return Number(this.bar.value) || 0;
  }

  setLabel(label) {
    this.label = label;
    const el = this.el.querySelector('.run-label');
    el.textContent = label;
    el.title = label;
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
    const seed = entries.filter(([k]) => SEED_KEY.test(k)).map(([, v]) => show(v));
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
    const changed = status !== this.status;
    this.status = status;
    this.statusEl.textContent = status;
    this.statusEl.className = `status status-${status}`;
    this.el.dataset.status = status;
    this.interruptBtn.hidden = this.final;
    this.interruptBtn.textContent = status === 'running' ? 'Interrupt' : 'Cancel';
    if (changed && this.hooks.onStatus) this.hooks.onStatus(this, status);
  }

  /** Apply a task_update message or a task from GET /api/task. */
  update(task) {
    if (task.workflow && typeof task.workflow === 'object' && Object.keys(task.workflow).length) this.workflow = task.workflow;
    if (task.status) this.setStatus(task.status);
    if (task.prompt_id) this.promptId = task.prompt_id;
    if (task.backend) this.backendEl.textContent = task.backend;
    if (task.params && Object.keys(task.params).length) { this.params = task.params; this.renderParams(); }
    if (task.started_at) this.startedAt = task.started_at * 1000;
    else if (task.status === 'running' && !this.startedAt) this.startedAt = Date.now();
    const progress = task.progress || {};
    this.progress = progress;
    if (typeof progress.percent === 'number') this.bar.value = progress.percent;
    this.renderProgressText(progress);
    if (task.error) this.showError(task.error);
    if (Array.isArray(task.warnings) && task.warnings.length) this.showWarnings(task.warnings);
    if (task.node_outputs) for (const [node, output] of Object.entries(task.node_outputs)) this.addNodeOutput(node, output);
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
      if (Array.isArray(task.cached_nodes)) this.showCacheNote(task);
      if (task.status === 'completed') this.preview.hidden = true;
    }
  }

  renderProgressText(progress) {
    const parts = [];
    if (this.status === 'pending') parts.push('held by ComfyGate until a backend can take it');
    if (this.status === 'queued') parts.push('waiting in the queue');
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
    this.errorEl.append(h('div', { class: 'error-type mono small-text', text: error.type || 'error' }), h('div', { class: 'error-message', text: message }));
    if (error.traceback) {
      const tb = Array.isArray(error.traceback) ? error.traceback.join('') : String(error.traceback);
      this.errorEl.append(h('details', {}, h('summary', {}, 'traceback'), h('pre', { text: tb })));
    }
    this.errorEl.className = `run-error ${error.type === 'interrupted' ? 'soft' : ''}`;
    if (this.hooks.onError && error.node_id !== undefined && error.node_id !== null && error.type !== 'interrupted') {
      this.hooks.onError(this, error);
    }
  }

  classOf(node) {
    const spec = this.workflow && node !== undefined && node !== null ? this.workflow[String(node)] : null;
    if (spec && spec.class_type) return spec.class_type;
    return String(node) === String(this.progress.node) ? this.progress.node_class : null;
  }

  /** A preview frame; a SaveImageWebsocket node's frames are outputs: they go to the gallery. */
  showPreview(dataUrl, node) {
    const url = safeUrl(dataUrl);
    if (!url) return;
    if (this.classOf(node) === 'SaveImageWebsocket') {
      const index = this.frames.length;
      const type = (/^data:image\/(\w+)/.exec(url) || [])[1] || 'png';
      const out = { filename: `${short(this.taskId)}_ws_${node}_${String(index + 1).padStart(3, '0')}.${type === 'jpeg' ? 'jpg' : type}`,
        node_id: String(node), url, kind: 'image' };
      this.frames.push({ out, src: url });
      this.framesEl.hidden = false;
      const img = h('img', { class: 'output', alt: out.filename, src: url });
      this.framesEl.append(h('figure', { class: 'output-image ws-frame', dataset: { kind: 'image' } },
        h('button', { type: 'button', class: 'thumb', 'aria-label': `view ${out.filename}`,
          onclick: () => this.lightbox && this.lightbox.open(this.frames, index, this.label) }, img),
        h('figcaption', { class: 'small-text' }, h('span', { class: 'mono', text: out.filename }), ` · #${node} · SaveImageWebsocket`),
        h('a', { class: 'download', href: url, download: out.filename }, '⬇ download')));
      return;
    }
    if (this.final) return;
    this.preview.src = url;
    this.preview.hidden = false;
  }

  /** Live text from a node (progress_text), shown while the run goes. */
  addText(node, text) {
    this.texts.append(h('pre', { class: 'text-output live-text' }, h('span', { class: 'muted', text: `#${node} ` }), String(text)));
  }

  /** A node's output (node_output message or the task's node_outputs): its text strings are shown. */
  addNodeOutput(node, output) {
    if (this.textFileNodes.has(String(node))) return;
    for (const { text } of textsOf({ [node]: output })) {
      const id = `${node}\u0000${text}`;
      if (this.textsShown.has(id)) continue;
      this.textsShown.add(id);
      const cls = this.classOf(node);
      this.texts.append(h('figure', { class: 'output-text', dataset: { kind: 'text', node } },
        h('figcaption', { class: 'small-text muted', text: `#${node}${cls ? ` ${cls}` : ''} · text` }),
        h('pre', { class: 'text-output', text })));
    }
  }

  showOutputs(outputs) {
    this.outputsShown = true;
    clear(this.gallery);
    for (const out of outputs) {
      if (kindOf(out) !== 'text') continue;
      this.textFileNodes.add(String(out.node_id));
      for (const fig of this.texts.querySelectorAll(`figure[data-node="${CSS.escape(String(out.node_id))}"]`)) fig.remove();
    }
    this.images = renderOutputs(this.gallery, outputs, { lightbox: this.lightbox, label: this.label });
    const shown = outputs.length + this.textsShown.size + this.frames.length;
    if (!shown && this.status === 'completed') {
      this.gallery.append(h('p', { class: 'muted small-text no-outputs', text: 'no output files' }));
    }
  }

  showCacheNote(task) {
    const cached = task.cached_nodes.length;
    const total = this.workflow ? Object.keys(this.workflow).length : (task.progress || {}).nodes_total;
    if (!cached || this.status !== 'completed') { this.noteEl.hidden = true; return; }
    const all = total && cached >= total;
    this.noteEl.textContent = all
      ? `ComfyUI answered from its cache: all ${cached} node(s) had run before with these values, nothing ran again. Change a value or the seed to run it.`
      : `${cached} of ${total || '?'} node(s) came from ComfyUI's cache (same inputs as an earlier run).`;
    this.noteEl.hidden = false;
    if (all && !this.gallery.querySelector('figure') && !this.textsShown.size) {
      clear(this.gallery).append(h('p', { class: 'muted small-text', text: 'cached: ComfyUI reports no new files for a cached output node' }));
    }
  }

  get imageCount() {
    return (this.images || []).length + this.frames.length;
  }

  async interrupt() {
    this.interruptBtn.disabled = true;
    try {
      const task = await api(`/api/interrupt/${encodeURIComponent(this.taskId)}`, { method: 'POST' });
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

export { FINAL, kindOf };
