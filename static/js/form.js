// The parameter form: one group per node, the right widget per input, and errors pinned to fields.

import { api, stringifyJSON } from './api.js';
import { $, $$, clear, h, show } from './dom.js';

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

export class ParamForm {
  constructor(root, { onUploadError } = {}) {
    this.root = root;
    this.params = [];
    this.fields = new Map(); // key → {param, get(), set(v), el, mode?}
    this.onUploadError = onUploadError || (() => {});
  }

  get empty() {
    return this.params.length === 0;
  }

  render(params) {
    this.params = params || [];
    this.fields.clear();
    clear(this.root);
    if (!this.params.length) {
      this.root.append(h('p', { class: 'muted' }, 'This workflow has no editable inputs; use the JSON tab.'));
      return;
    }
    const groups = new Map();
    for (const param of this.params) {
      if (!groups.has(param.node_id)) groups.set(param.node_id, []);
      groups.get(param.node_id).push(param);
    }
    for (const [nodeId, items] of groups) {
      const first = items[0];
      const fieldset = h('fieldset', { class: 'node', dataset: { nodeId } },
        h('legend', {},
          h('span', { class: 'node-id', text: `#${nodeId}` }),
          h('span', { class: 'node-title', text: first.title || first.class_type }),
          first.title && first.title !== first.class_type ? h('span', { class: 'node-class', text: first.class_type }) : null),
        h('div', { class: 'node-error', role: 'alert' }));
      for (const param of items) fieldset.append(this.field(param));
      this.root.append(fieldset);
    }
  }

  field(param) {
    const id = `p-${param.key.replace(/[^A-Za-z0-9_-]/g, '_')}`;
    const role = ROLE_LABELS[param.role];
    const wrap = h('div', { class: 'field', dataset: { key: param.key } });
    const label = h('label', { for: id },
      h('span', { class: 'input-name', text: param.input }),
      role ? h('span', { class: `role role-${param.role}`, text: role }) : null,
      h('span', { class: 'type', text: param.type || '' }));
    wrap.append(label);
    let control;
    if (param.role === 'seed') control = this.seedWidget(param, id);
    else if (param.role === 'input_image' || (param.class_type === 'LoadImage' && param.input === 'image')) {
      control = this.imageWidget(param, id);
    } else if (Array.isArray(param.options)) control = this.comboWidget(param, id);
    else if (param.type === 'BOOLEAN' || typeof param.value === 'boolean') control = this.boolWidget(param, id);
    else if (param.type === 'INT' || param.type === 'FLOAT') control = this.numberWidget(param, id);
    else if (typeof param.value === 'string' || param.type === 'STRING') control = this.textWidget(param, id);
    else control = this.jsonWidget(param, id);
    wrap.append(control.el, h('div', { class: 'field-error', role: 'alert' }));
    wrap.addEventListener('input', () => this.clearField(param.key));
    wrap.addEventListener('change', () => this.clearField(param.key));
    this.fields.set(param.key, { param, ...control, wrap });
    return wrap;
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
    const mode = h('select', { class: 'seed-mode', 'aria-label': `${param.input} mode` },
      h('option', { value: 'random', text: 'random each run' }),
      h('option', { value: 'fixed', text: 'fixed' }));
    mode.value = 'random';
    input.addEventListener('input', () => { mode.value = 'fixed'; });
    const dice = h('button', {
      type: 'button', class: 'small', title: 'pick a new random seed now (and keep it fixed)',
      onclick: () => {
        const max = typeof param.max === 'number' ? Math.min(param.max, 2 ** 50) : 2 ** 50;
        input.value = String(Math.floor(Math.random() * max));
        mode.value = 'fixed';
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
        select.append(h('option', { value: text, text }));
      }
      select.value = text;
    };
    ensure(param.value);
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
        ensure(name);
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
    select.addEventListener('change', () => { preview.hidden = true; });
    const upload = h('label', { class: 'button small' }, 'Upload image…', file);
    return {
      el: h('div', { class: 'image-picker' }, h('div', { class: 'row' }, select, upload), status, preview),
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
    if (field.mode) field.mode.value = 'fixed';
    return true;
  }

  seedMode(key) {
    const field = this.fields.get(key);
    return field && field.mode ? field.mode.value : null;
  }

  setSeedMode(key, mode) {
    const field = this.fields.get(key);
    if (field && field.mode) field.mode.value = mode;
  }

  /** What to send as `params`: every changed value, and every seed (-1 when random each run). */
  submitParams() {
    const params = {};
    for (const [key, field] of this.fields) {
      if (field.mode) {
        params[key] = field.mode.value === 'random' ? -1 : field.get();
        continue;
      }
      const value = field.get();
      if (!same(value, field.param.value)) params[key] = value;
    }
    return params;
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

  /** The workflow with the form's values written in (seeds as shown), for saving and the JSON tab. */
  applyTo(workflow) {
    const copy = structuredClone(workflow);
    for (const [key, field] of this.fields) {
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
      if (field && field.mode) field.set(value);
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
    return true;
  }

  setNodeError(nodeId, message, cls = 'invalid') {
    const fieldset = $$('fieldset.node', this.root).find((f) => f.dataset.nodeId === String(nodeId));
    if (!fieldset) return false;
    fieldset.classList.add(cls);
    $('.node-error', fieldset).append(h('div', { text: message }));
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

