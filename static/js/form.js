// The parameter form: the essentials first, then one group per node (nodes inside a subgraph under
// the subgraph the user sees), the right widget per input, a filter, and errors pinned to fields.

import { api, mediaUrl, stringifyJSON } from './api.js';
import { $, $$, clear, h, show } from './dom.js';
import { controlFor, readUiSource } from './uiworkflow.js';

const ROLE_LABELS = {
  positive_prompt: 'prompt +',
  negative_prompt: 'prompt −',
  seed: 'seed',
  steps: 'steps',
  cfg: 'cfg',
  sampler: 'sampler',
  scheduler: 'scheduler',
  denoise: 'denoise',
  width: 'width',
  height: 'height',
  batch_size: 'batch',
  input_image: 'image',
  checkpoint: 'model',
  lora: 'lora',
};
// What a first-time user reaches for first; in this order.
const ESSENTIAL_ROLES = ['positive_prompt', 'negative_prompt', 'input_image', 'seed', 'width', 'height', 'steps',
  'cfg', 'sampler', 'scheduler', 'denoise'];
const SEED_MODES = [
  ['randomize', 'random each run'],
  ['fixed', 'fixed'],
  ['increment', 'increment after run'],
  ['decrement', 'decrement after run'],
];
const LOADER_INPUTS = /(ckpt|lora|vae|unet|clip|model|control_net|upscale_model|style_model|gligen|hypernetwork)_?name$|^image$|^audio$|^video$|^file$/;

const SLIDER_MAX_SPAN = 200;
const SLIDER_MAX_STEPS = 2000;

function same(a, b) {
  return stringifyJSON(a) === stringifyJSON(b);
}

/** An integer typed in a field: a Number when exact, a BigInt beyond 2**53, else null. */
export function parseInteger(text) {
  const t = String(text).trim();
  if (!/^-?\d+$/.test(t)) return null;
  const n = Number(t);
  return Number.isSafeInteger(n) ? n : BigInt(t);
}

function isLink(value) {
  return Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && Number.isInteger(value[1]);
}

/** The subgraph instance a param belongs to: the server's grouping when it sends one, else the id path. */
function groupOf(param) {
  const given = param.group || param.subgraph || null; // the server's grouping: {node_id, title}
  const givenId = given && typeof given === 'object' ? (given.node_id ?? given.id) : undefined;
  if (givenId !== undefined && givenId !== null) return { id: String(givenId), title: given.title || null };
  if (typeof param.display_node === 'string' && param.display_node !== param.node_id) return { id: param.display_node, title: null };
  const id = String(param.node_id);
  const cut = id.lastIndexOf(':');
  return cut > 0 ? { id: id.slice(0, cut), title: null } : null;
}

export class ParamForm {
  constructor(root, { onUploadError, onChange } = {}) {
    this.root = root;
    this.params = [];
    this.fields = new Map(); // key → {param, get(), set(v), el, wrap, mode?, kind?}
    this.onUploadError = onUploadError || (() => {});
    this.onChange = onChange || (() => {});
    this.ui = readUiSource(null);
    this.format = 'api';
    root.addEventListener('input', () => this.onChange());
    root.addEventListener('change', () => this.onChange());
  }

  get empty() {
    return this.params.length === 0;
  }

  /** Lay out the params. `source`: the UI-format file when there is one; `format`: 'ui' | 'api'. */
  render(params, { source = null, format = 'api', moreOpen = null } = {}) {
    this.params = params || [];
    this.format = format;
    this.ui = readUiSource(source);
    this.fields.clear();
    clear(this.root);
    if (!this.params.length) {
      this.root.append(h('p', { class: 'muted' }, 'This workflow has no editable inputs; use the JSON tab.'));
      return;
    }
    const byKey = new Map(this.params.map((p) => [p.key, p]));
    const placed = new Set();

    // 1. the essentials: the author's App Mode list when there is one, else the obvious roles
    // the server marks the App Mode inputs it resolved (`exposed`); else read the UI file's list here
    const exposed = this.params.filter((p) => p.exposed);
    let essentials = exposed.length ? exposed : this.ui.linear.map((k) => byKey.get(k)).filter(Boolean);
    const fromAuthor = essentials.length > 0;
    if (!fromAuthor) {
      for (const role of ESSENTIAL_ROLES) {
        for (const p of this.params) if (p.role === role && !essentials.includes(p)) essentials.push(p);
      }
    }
    this.filterBox = h('input', { type: 'search', class: 'param-filter', placeholder: 'filter inputs (name, node, value)…',
      'aria-label': 'filter inputs', spellcheck: 'false', oninput: () => this.applyFilter() });
    this.root.append(h('div', { class: 'filter-row' }, this.filterBox));
    if (essentials.length) {
      const box = h('fieldset', { class: 'essentials' },
        h('legend', {}, h('span', { class: 'node-title', text: fromAuthor ? 'Inputs chosen by the author' : 'Essentials' })));
      for (const p of essentials) { box.append(this.field(p, { withNode: true })); placed.add(p.key); }
      this.root.append(box);
    }

    // 2. every other input, by node; nodes inside a subgraph under the subgraph (promoted inputs first)
    const rest = this.params.filter((p) => !placed.has(p.key));
    if (!rest.length) return;
    const more = h('details', { class: 'more-inputs' },
      h('summary', {}, essentials.length ? `All other inputs (${rest.length})` : `Inputs (${rest.length})`));
    more.open = moreOpen ?? (!essentials.length || rest.length <= 24);
    this.more = more;
    const containers = new Map(); // subgraph id → element to append node fieldsets to
    const containerFor = (group) => {
      if (!group) return more;
      if (containers.has(group.id)) return containers.get(group.id);
      const known = this.ui.groups.get(group.id);
      const title = group.title || (known && known.title) || `subgraph ${group.id}`;
      const parentGroup = group.id.includes(':') ? { id: group.id.slice(0, group.id.lastIndexOf(':')), title: null } : null;
      const fieldset = h('fieldset', { class: 'subgraph', dataset: { subgraphId: group.id } },
        h('legend', {},
          h('span', { class: 'node-id', text: `#${group.id}` }),
          h('span', { class: 'node-title', text: title }),
          h('span', { class: 'node-class', text: 'subgraph' })));
      const promoted = ((known && known.promoted) || []).map((e) => ({ ...e, param: byKey.get(e.key) }))
        .filter((e) => e.param && !placed.has(e.key));
      for (const e of promoted) { fieldset.append(this.field(e.param, { label: e.label })); placed.add(e.key); }
      const inner = h('details', { class: 'subgraph-inner' }, h('summary', { class: 'small-text' }, 'nodes inside'));
      inner.open = !promoted.length;
      fieldset.append(inner);
      (parentGroup ? containerFor(parentGroup) : more).append(fieldset);
      containers.set(group.id, inner);
      return inner;
    };
    const nodes = new Map();
    for (const param of rest) {
      if (!nodes.has(param.node_id)) nodes.set(param.node_id, []);
      nodes.get(param.node_id).push(param);
    }
    for (const [nodeId, items] of nodes) {
      const container = containerFor(groupOf(items[0])); // places the subgraph's promoted inputs first
      const todo = items.filter((p) => !placed.has(p.key));
      if (!todo.length) continue;
      const first = items[0];
      const fieldset = h('fieldset', { class: 'node', dataset: { nodeId } },
        h('legend', {},
          h('span', { class: 'node-id', text: `#${nodeId}` }),
          h('span', { class: 'node-title', title: first.title || first.class_type, text: first.title || first.class_type }),
          first.title && first.title !== first.class_type ? h('span', { class: 'node-class', text: first.class_type }) : null),
        h('div', { class: 'node-error', role: 'alert' }));
      for (const param of todo) { fieldset.append(this.field(param)); placed.add(param.key); }
      container.append(fieldset);
    }
    this.root.append(more);
  }

  field(param, { withNode = false, label = null } = {}) {
    const id = `p-${param.key.replace(/[^A-Za-z0-9_-]/g, '_')}`;
    const role = ROLE_LABELS[param.role];
    const wrap = h('div', { class: 'field', dataset: { key: param.key, nodeId: param.node_id } });
    const labelEl = h('label', { for: id },
      h('span', { class: 'input-name', title: param.input, text: label || param.input }),
      role ? h('span', { class: `role role-${param.role}`, text: role }) : null,
      withNode || label ? h('span', { class: 'field-node', title: `${param.title || param.class_type} #${param.node_id}`,
        text: `${param.title || param.class_type} #${param.node_id}` }) : null,
      h('span', { class: 'type', text: param.type || '' }));
    wrap.append(labelEl);
    let control;
    if (param.role === 'seed') control = this.seedWidget(param, id);
    else if (param.role === 'input_image' || (param.class_type === 'LoadImage' && param.input === 'image')) {
      control = this.imageWidget(param, id);
    } else if (Array.isArray(param.options)) control = this.comboWidget(param, id);
    else if (param.type === 'BOOLEAN' || typeof param.value === 'boolean') control = this.boolWidget(param, id);
    else if (param.type === 'INT' || param.type === 'FLOAT') control = { ...this.numberWidget(param, id), kind: param.type };
    else if (typeof param.value === 'string' || param.type === 'STRING') control = this.textWidget(param, id);
    else control = this.jsonWidget(param, id);
    wrap.append(control.el, h('div', { class: 'field-error', role: 'alert' }));
    wrap.addEventListener('input', () => this.clearField(param.key));
    wrap.addEventListener('change', () => this.clearField(param.key));
    this.fields.set(param.key, { param, ...control, wrap });
    return wrap;
  }

  /** Show only the fields whose key, input, node title or class or value contain the filter text. */
  applyFilter() {
    const text = (this.filterBox ? this.filterBox.value : '').trim().toLowerCase();
    for (const [, field] of this.fields) {
      const p = field.param;
      const hay = `${p.key} ${p.input} ${p.title || ''} ${p.class_type} ${p.role || ''} ${show(field.get(), 200)}`.toLowerCase();
      field.wrap.hidden = Boolean(text) && !hay.includes(text);
    }
    for (const box of $$('fieldset', this.root)) {
      box.hidden = Boolean(text) && !$$('.field', box).some((f) => !f.hidden);
    }
    if (text) for (const d of $$('details', this.root)) d.open = true;
  }

  /** Missing files the workflow names: combo values (models, input images) the backend does not list. */
  missingFiles() {
    const missing = [];
    for (const [key, field] of this.fields) {
      const p = field.param;
      if (!Array.isArray(p.options) || !LOADER_INPUTS.test(p.input)) continue;
      const value = String(field.get() ?? '');
      if (value && !p.options.map(String).includes(value)) missing.push({ key, value, param: p });
    }
    return missing;
  }

  textWidget(param, id) {
    const multiline = param.multiline || String(param.role || '').endsWith('prompt');
    const input = multiline
      ? h('textarea', { id, rows: param.role === 'positive_prompt' ? 5 : 3, spellcheck: 'false' })
      : h('input', { id, type: 'text', spellcheck: 'false' });
    input.value = param.value ?? '';
    return { el: input, get: () => input.value, set: (v) => { input.value = v ?? ''; } };
  }

  jsonWidget(param, id) {
    const input = h('input', { id, type: 'text', class: 'mono', title: 'a JSON value' });
    input.value = stringifyJSON(param.value);
    return {
      el: input,
      get: () => { try { return JSON.parse(input.value); } catch { return input.value; } },
      set: (v) => { input.value = stringifyJSON(v); },
    };
  }

  boolWidget(param, id) {
    const input = h('input', { id, type: 'checkbox' });
    input.checked = Boolean(param.value);
    return { el: h('div', { class: 'bool' }, input), get: () => input.checked, set: (v) => { input.checked = Boolean(v); } };
  }

  comboWidget(param, id) {
    const select = h('select', { id });
    const options = param.options.map((o) => String(o));
    for (const option of options) select.append(h('option', { value: option, text: option }));
    const ensure = (value) => {
      const text = String(value ?? '');
      if (!options.includes(text) && !$$('option', select).some((o) => o.value === text)) {
        select.append(h('option', { value: text, text: `${text} (not on the backend)`, class: 'missing' }));
      }
      select.value = text;
    };
    ensure(param.value);
    return { el: select, get: () => select.value, set: ensure, select };
  }

  numberWidget(param, id) {
    const isInt = param.type === 'INT';
    const step = param.step ?? (isInt ? 1 : 'any');
    const attrs = { id, type: 'number', step: String(step), inputmode: isInt ? 'numeric' : 'decimal' };
    if (typeof param.min === 'number') attrs.min = String(param.min);
    if (typeof param.max === 'number') attrs.max = String(param.max);
    const input = h('input', attrs);
    input.value = String(param.value ?? '');
    const span = typeof param.min === 'number' && typeof param.max === 'number' ? param.max - param.min : Infinity;
    const numericStep = typeof step === 'number' ? step : 0.01;
    const sliderOk = span > 0 && span <= SLIDER_MAX_SPAN && span / numericStep <= SLIDER_MAX_STEPS;
    const get = () => {
      const text = input.value.trim();
      if (text === '') return input.validity.badInput ? NaN : null;
      return isInt ? (parseInteger(text) ?? Number(text)) : Number(text);
    };
    if (!sliderOk) {
      return { el: input, get, set: (v) => { input.value = String(v ?? ''); } };
    }
    const slider = h('input', {
      type: 'range', min: String(param.min), max: String(param.max), step: String(numericStep),
      'aria-label': `${param.input} slider`, tabindex: '-1',
    });
    slider.value = String(param.value ?? param.min);
    slider.addEventListener('input', () => { input.value = slider.value; });
    input.addEventListener('input', () => { if (input.value !== '') slider.value = input.value; });
    return {
      el: h('div', { class: 'number-slider' }, input, slider),
      get,
      set: (v) => { input.value = String(v ?? ''); slider.value = String(v ?? param.min); },
    };
  }

  seedWidget(param, id) {
    const input = h('input', { id, type: 'text', inputmode: 'numeric', class: 'mono seed-value', pattern: '-?[0-9]+' });
    input.value = String(param.value ?? 0);
    const mode = h('select', { class: 'seed-mode', 'aria-label': `${param.input} control after generate` },
      ...SEED_MODES.map(([value, text]) => h('option', { value, text })));
    // the file's own control_after_generate; an API file holds no such thing: its seed stays as written
    mode.value = controlFor(this.ui, param) || 'fixed';
    input.addEventListener('input', () => { if (mode.value === 'randomize') mode.value = 'fixed'; });
    const dice = h('button', {
      type: 'button', class: 'small', title: 'pick a new random seed now (and keep it fixed)',
      onclick: () => {
        input.value = String(randomSeed(param));
        mode.value = 'fixed';
        this.onChange();
      },
    }, 'New');
    return {
      el: h('div', { class: 'seed' }, input, mode, dice),
      get: () => parseInteger(input.value) ?? input.value,
      set: (v) => { input.value = String(v ?? ''); },
      mode,
    };
  }

  imageWidget(param, id) {
    const select = h('select', { id });
    const options = Array.isArray(param.options) ? param.options.map(String) : [];
    for (const option of options) select.append(h('option', { value: option, text: option }));
    const preview = h('img', { class: 'preview', alt: 'input image preview', hidden: true });
    const status = h('span', { class: 'muted small-text' });
    const ensure = (value) => {
      const text = String(value ?? '');
      if (text && !$$('option', select).some((o) => o.value === text)) {
        const known = options.includes(text) || uploaded.has(text);
        select.append(h('option', { value: text, text: known ? text : `${text} (not on the backend)`, class: known ? null : 'missing' }));
      }
      select.value = text;
    };
    const uploaded = new Set();
    ensure(param.value);
    // what the backend holds under the chosen name (GET /api/input), whatever uploaded it
    let shown = 0;
    const showExisting = async (name) => {
      const mine = ++shown;
      if (!name) { preview.hidden = true; return; }
      const path = name.split('/').map(encodeURIComponent).join('/');
      try {
        const src = await mediaUrl(`/api/input/${path}`);
        if (mine !== shown) return;
        // shown once it has loaded: a name the backend lacks never flashes a broken image
        preview.hidden = true;
        preview.onload = () => { if (mine === shown) preview.hidden = false; };
        preview.onerror = () => { preview.hidden = true; };
        preview.src = src;
      } catch {
        if (mine === shown) preview.hidden = true;
      }
    };
    showExisting(select.value);
    const file = h('input', { type: 'file', accept: 'image/*', class: 'image-file', 'aria-label': `upload ${param.input}` });
    file.addEventListener('change', async () => {
      const picked = file.files && file.files[0];
      if (!picked) return;
      status.textContent = 'uploading…';
      const form = new FormData();
      form.append('image', picked, picked.name);
      try {
        const answer = await api('/api/upload/image', { form });
        const name = answer.subfolder ? `${answer.subfolder}/${answer.name}` : answer.name;
        uploaded.add(name);
        ensure(name);
        this.onChange();
        shown += 1; // a preview still loading for the old name must not replace this one
        if (preview.src.startsWith('blob:')) URL.revokeObjectURL(preview.src);
        preview.src = URL.createObjectURL(picked);
        preview.hidden = false;
        status.textContent = `uploaded as ${name}`;
        this.clearField(param.key);
      } catch (err) {
        status.textContent = '';
        this.setFieldError(param.key, `upload failed: ${err.message}`);
        this.onUploadError(err);
      } finally {
        file.value = '';
      }
    });
    select.addEventListener('change', () => showExisting(select.value));
    file.hidden = true;
    const upload = h('button', { type: 'button', class: 'small upload-button', 'aria-label': `upload an image for ${param.input}`,
      onclick: () => file.click() }, 'Upload image…');
    return {
      el: h('div', { class: 'image-picker' }, h('div', { class: 'row' }, select, upload, file), status, preview),
      get: () => select.value,
      set: ensure,
    };
  }

  // --- values ----------------------------------------------------------------------------------
  value(key) {
    const field = this.fields.get(key);
    return field ? field.get() : undefined;
  }

  set(key, value) {
    const field = this.fields.get(key);
    if (!field) return false;
    field.set(value);
    if (field.mode && field.mode.value === 'randomize') field.mode.value = 'fixed';
    return true;
  }

  seedKeys() {
    return [...this.fields].filter(([, f]) => f.mode).map(([k]) => k);
  }

  seedMode(key) {
    const field = this.fields.get(key);
    return field && field.mode ? field.mode.value : null;
  }

  setSeedMode(key, mode) {
    const field = this.fields.get(key);
    if (field && field.mode) field.mode.value = mode;
  }

  /** Problems the page can tell before sending: empty or non-numeric numbers, fractions in INT fields. */
  check() {
    const problems = [];
    for (const [key, field] of this.fields) {
      const p = field.param;
      const where = `#${p.node_id} ${p.title || p.class_type} · ${p.input}`;
      if (field.kind === 'INT' || field.kind === 'FLOAT') {
        const value = field.get();
        const range = typeof p.min === 'number' && typeof p.max === 'number' ? ` between ${p.min} and ${p.max}` : '';
        if (value === null) problems.push({ key, message: `${where}: enter a number${range} (the field is empty)` });
        else if (typeof value === 'number' && Number.isNaN(value)) problems.push({ key, message: `${where}: not a number; enter a number${range}` });
        else if (field.kind === 'INT' && typeof value === 'number' && !Number.isInteger(value)) {
          problems.push({ key, message: `${where}: ${value} is not a whole number (INT)` });
        }
      } else if (field.mode && typeof field.get() !== 'number' && typeof field.get() !== 'bigint') {
        problems.push({ key, message: `${where}: the seed must be a whole number` });
      }
    }
    return problems;
  }

  /** What to send as `params`: every changed value, and every seed (-1 when random each run). */
  submitParams({ seedOffset = 0, randomSeeds = false } = {}) {
    const params = {};
    for (const [key, field] of this.fields) {
      if (field.mode) {
        const mode = field.mode.value;
        if (mode === 'randomize' || randomSeeds) params[key] = -1;
        else params[key] = offsetSeed(field.get(), mode === 'decrement' ? -seedOffset : seedOffset);
        continue;
      }
      const value = field.get();
      if (!same(value, field.param.value)) params[key] = value;
    }
    return params;
  }

  /** After a run is queued: increment/decrement seeds move on, as ComfyUI's page does. */
  afterQueued(times = 1) {
    for (const [, field] of this.fields) {
      if (!field.mode) continue;
      const mode = field.mode.value;
      if (mode === 'increment' || mode === 'decrement') field.set(offsetSeed(field.get(), mode === 'increment' ? times : -times));
    }
    this.onChange();
  }

  /** Values to store as a saved workflow's new defaults: every changed value, seeds as shown. */
  changedValues() {
    const params = {};
    for (const [key, field] of this.fields) {
      const value = field.get();
      if (!same(value, field.param.value)) params[key] = value;
    }
    return params;
  }

  /** Every value as shown, and the seed modes: what the page keeps across a reload. */
  snapshot() {
    const values = {};
    const modes = {};
    for (const [key, field] of this.fields) {
      values[key] = field.get();
      if (field.mode) modes[key] = field.mode.value;
    }
    return { values, modes, moreOpen: this.more ? this.more.open : null };
  }

  restore(snap) {
    if (!snap) return;
    for (const [key, value] of Object.entries(snap.values || {})) {
      const field = this.fields.get(key);
      if (field && value !== null && !(typeof value === 'number' && Number.isNaN(value))) field.set(value);
    }
    for (const [key, mode] of Object.entries(snap.modes || {})) this.setSeedMode(key, mode);
  }

  /** Every value a workflow holds for the form's fields (links skipped); seeds become fixed. */
  setFromWorkflow(workflow) {
    let placed = 0;
    for (const [key, field] of this.fields) {
      const node = workflow && workflow[field.param.node_id];
      const inputs = node && node.inputs;
      if (!inputs || !(field.param.input in inputs)) continue;
      const value = inputs[field.param.input];
      if (isLink(value)) continue;
      if (this.set(key, value)) placed += 1;
      if (field.mode) field.mode.value = 'fixed';
    }
    this.onChange();
    return placed;
  }

  /** The workflow with the form's values written in (seeds as shown), for saving and the JSON tab. */
  applyTo(workflow) {
    const copy = structuredClone(workflow);
    for (const [, field] of this.fields) {
      const { node_id: nodeId, input } = field.param;
      if (copy[nodeId] && copy[nodeId].inputs) {
        const value = field.get();
        if (value !== null && !(typeof value === 'number' && Number.isNaN(value))) copy[nodeId].inputs[input] = value;
      }
    }
    return copy;
  }

  /** After a run: show the seed that was used (random seeds are resolved by ComfyGate). */
  showApplied(applied) {
    for (const [key, value] of Object.entries(applied || {})) {
      const field = this.fields.get(key);
      if (field && field.mode && field.mode.value === 'randomize') field.set(value);
    }
  }

  /** Open the collapsed groups and clear the filter so that a marked field can be seen. */
  reveal(el) {
    if (this.filterBox && this.filterBox.value) { this.filterBox.value = ''; this.applyFilter(); }
    for (let node = el; node && node !== this.root; node = node.parentElement) {
      if (node.tagName === 'DETAILS') node.open = true;
    }
  }

  // --- errors ----------------------------------------------------------------------------------
  clearErrors() {
    for (const el of $$('.invalid', this.root)) el.classList.remove('invalid');
    for (const el of $$('.runtime-error', this.root)) el.classList.remove('runtime-error');
    for (const el of $$('.field-error, .node-error', this.root)) clear(el);
  }

  clearField(key) {
    const field = this.fields.get(key);
    if (!field || !field.wrap.classList.contains('invalid')) return;
    field.wrap.classList.remove('invalid');
    clear($('.field-error', field.wrap));
  }

  setFieldError(key, message) {
    const field = this.fields.get(key);
    if (!field) return false;
    field.wrap.classList.add('invalid');
    const box = $('.field-error', field.wrap);
    box.append(h('div', { text: message }));
    this.reveal(field.wrap);
    return true;
  }

  setNodeError(nodeId, message, cls = 'invalid') {
    const fieldset = $$('fieldset.node', this.root).find((f) => f.dataset.nodeId === String(nodeId));
    if (!fieldset) return false;
    fieldset.classList.add(cls);
    $('.node-error', fieldset).append(h('div', { text: message }));
    this.reveal(fieldset);
    return true;
  }

  /** Put a problem where it belongs: on its field, else on its node. Returns true when placed. */
  place(problem) {
    const key = problem.key || (problem.node_id && problem.input ? `${problem.node_id}.${problem.input}` : null);
    if (key && this.setFieldError(key, problem.message)) return true;
    if (problem.node_id !== null && problem.node_id !== undefined) {
      return this.setNodeError(problem.node_id, problem.message);
    }
    return false;
  }

  /** Scroll the first highlighted field or node into view. */
  revealFirst() {
    const first = $('.field.invalid, fieldset.node.invalid, fieldset.node.runtime-error', this.root);
    if (first) {
      first.scrollIntoView({ block: 'center', behavior: 'smooth' });
      const focusable = $('input, textarea, select', first);
      if (focusable) focusable.focus({ preventScroll: true });
    }
  }
}

/** Turn an API error body into problems {key, node_id, input, message} for ParamForm.place. */
export function problemsOf(body) {
  if (!body) return [];
  if (Array.isArray(body.problems)) {
    return body.problems.map((p) => ({
      key: p.key || null,
      node_id: p.node_id ?? null,
      input: p.input ?? null,
      message: p.message || show(p),
    }));
  }
  if (body.node_errors && typeof body.node_errors === 'object') {
    const problems = [];
    for (const [nodeId, entry] of Object.entries(body.node_errors)) {
      const errors = (entry && Array.isArray(entry.errors)) ? entry.errors : [];
      for (const e of errors) {
        const input = e.extra_info && e.extra_info.input_name;
        const detail = e.details ? `: ${e.details}` : '';
        problems.push({
          key: input ? `${nodeId}.${input}` : null,
          node_id: nodeId,
          input: input || null,
          message: `${e.message || e.type || 'error'}${detail}`,
        });
      }
      if (!errors.length) problems.push({ node_id: nodeId, message: `${entry.class_type || 'node'} was refused` });
    }
    return problems;
  }
  if (body.node_id !== undefined && body.node_id !== null) {
    return [{ node_id: String(body.node_id), input: null, key: null, message: body.message || body.error }];
  }
  return [];
}


function randomSeed(param) {
  const max = typeof param.max === 'number' ? Math.min(param.max, 2 ** 50) : 2 ** 50;
  return Math.floor(Math.random() * max);
}

function offsetSeed(value, by) {
  if (!by) return value;
  if (typeof value === 'bigint') return value + BigInt(by);
  if (typeof value === 'number') {
    const next = value + by;
    return Number.isSafeInteger(next) ? Math.max(0, next) : BigInt(value) + BigInt(by);
  }
  return value;
}
