// A parameter sweep: one or two inputs, a list of values each, every combination run, and the outputs
// side by side in a grid labelled with the values.

import { parseInteger } from './form.js';
import { clear, h, show } from './dom.js';
import { fillCell, gridTable } from './outputs.js';

export const MAX_CELLS = 64;

/** Parse "a, b, c" (or "1..5" / "1..9:2" for numbers) into values of the field's kind. */
export function parseValues(text, param) {
  const raw = String(text || '').split(',').map((s) => s.trim()).filter((s) => s.length);
  const kind = param.role === 'seed' ? 'INT' : param.type;
  const values = [];
  for (const item of raw) {
    const range = /^(-?\d+(?:\.\d+)?)\s*\.\.\s*(-?\d+(?:\.\d+)?)(?::(\d+(?:\.\d+)?))?$/.exec(item);
    if (range && (kind === 'INT' || kind === 'FLOAT')) {
      const [a, b, step] = [Number(range[1]), Number(range[2]), Number(range[3] || 1)];
      if (step <= 0) throw new Error(`${item}: the step must be positive`);
      for (let v = a; a <= b ? v <= b + 1e-9 : v >= b - 1e-9; v += a <= b ? step : -step) {
        values.push(kind === 'INT' ? Math.round(v) : Number(v.toFixed(6)));
        if (values.length > MAX_CELLS) throw new Error(`more than ${MAX_CELLS} values`);
      }
      continue;
    }
    if (kind === 'INT') {
      const n = parseInteger(item);
      if (n === null) throw new Error(`${param.input}: "${item}" is not a whole number`);
      values.push(n);
    } else if (kind === 'FLOAT') {
      const n = Number(item);
      if (!Number.isFinite(n)) throw new Error(`${param.input}: "${item}" is not a number`);
      values.push(n);
    } else if (kind === 'BOOLEAN') {
      if (!/^(true|false)$/i.test(item)) throw new Error(`${param.input}: "${item}" is not true or false`);
      values.push(/^true$/i.test(item));
    } else {
      if (Array.isArray(param.options) && !param.options.map(String).includes(item)) {
        throw new Error(`${param.input}: "${item}" is not one of its choices`);
      }
      values.push(item);
    }
  }
  if (!values.length) throw new Error(`give ${param.input} at least one value`);
  return values;
}

/** The dialog that asks for the axes. `onRun({a: {key, values}, b: {key, values}|null})`. */
export class SweepDialog {
  constructor({ form, onRun }) {
    this.form = form;
    this.onRun = onRun;
    this.axis = [0, 1].map((i) => ({
      select: h('select', { class: 'sweep-key', 'aria-label': `parameter ${i + 1}`, onchange: () => this.suggest(i) }),
      values: h('input', { type: 'text', class: 'grow sweep-values mono', 'aria-label': `values of parameter ${i + 1}`,
        placeholder: 'comma-separated, or 1..5 / 4..12:4', oninput: () => this.count() }),
    }));
    this.countEl = h('span', { class: 'muted small-text sweep-count' });
    this.errorEl = h('div', { class: 'error-text small-text', role: 'alert' });
    this.dialog = h('dialog', { class: 'sweep-dialog', 'aria-labelledby': 'sweep-title' },
      h('form', { method: 'dialog', onsubmit: (e) => this.submit(e) },
        h('h3', { id: 'sweep-title', text: 'Parameter sweep' }),
        h('p', { class: 'small-text muted', text: 'Run every combination of the values below with the rest of the form as it is; the outputs line up in a labelled grid. Seeds in "random each run" mode are drawn once, so only the swept values differ.' }),
        h('label', { class: 'small-text', text: 'Rows' }),
        h('div', { class: 'row' }, this.axis[0].select, this.axis[0].values),
        h('label', { class: 'small-text', text: 'Columns (optional)' }),
        h('div', { class: 'row' }, this.axis[1].select, this.axis[1].values),
        this.countEl,
        this.errorEl,
        h('div', { class: 'row end' },
          h('button', { type: 'button', class: 'small', onclick: () => this.dialog.close() }, 'Cancel'),
          h('button', { type: 'submit', class: 'primary small sweep-run' }, 'Run the grid'))));
    document.body.append(this.dialog);
  }

  open() {
    for (const [i, axis] of this.axis.entries()) {
      const keep = axis.select.value;
      clear(axis.select);
      if (i === 1) axis.select.append(h('option', { value: '', text: '— none —' }));
      for (const [key, field] of this.form.fields) {
        const p = field.param;
        axis.select.append(h('option', { value: key, text: `${p.input} · ${p.title || p.class_type} #${p.node_id}` }));
      }
      if (keep && this.form.fields.has(keep)) axis.select.value = keep;
      else if (i === 0) {
        const pick = [...this.form.fields.values()].find((f) => ['cfg', 'steps', 'seed'].includes(f.param.role));
        if (pick) axis.select.value = pick.param.key;
      }
      if (!axis.values.value) this.suggest(i);
    }
    this.count();
    this.dialog.showModal();
  }

  suggest(i) {
    const key = this.axis[i].select.value;
    const field = key && this.form.fields.get(key);
    this.axis[i].values.value = field ? show(field.get(), 60) : '';
    this.count();
  }

  read() {
    const axes = [];
    for (const axis of this.axis) {
      const key = axis.select.value;
      if (!key) continue;
      const field = this.form.fields.get(key);
      axes.push({ key, param: field.param, values: parseValues(axis.values.value, field.param) });
    }
    if (!axes.length) throw new Error('choose a parameter');
    if (axes.length === 2 && axes[0].key === axes[1].key) throw new Error('choose two different parameters');
    const cells = axes.reduce((n, a) => n * a.values.length, 1);
    if (cells > MAX_CELLS) throw new Error(`${cells} runs: at most ${MAX_CELLS} per sweep`);
    return axes;
  }

  count() {
    try {
      const axes = this.read();
      this.countEl.textContent = `${axes.reduce((n, a) => n * a.values.length, 1)} run(s)`;
      this.errorEl.textContent = '';
    } catch (err) {
      this.countEl.textContent = '';
      this.errorEl.textContent = err.message;
    }
  }

  submit(event) {
    event.preventDefault();
    let axes;
    try { axes = this.read(); } catch (err) { this.errorEl.textContent = err.message; return; }
    this.dialog.close();
    this.onRun(axes);
  }
}

/** The grid of one sweep in the runs column; cells are filled as their tasks end. */
export class SweepGrid {
  constructor(list, { id, label, axes, lightbox, onDismiss }) {
    this.id = id;
    this.label = label;
    this.axes = axes.map((a) => ({ key: a.key, input: a.input || (a.param && a.param.input) || a.key, values: a.values }));
    this.lightbox = lightbox;
    const [a, b] = this.axes;
    const rows = a.values.map((v) => ({ label: show(v, 40) }));
    const cols = b ? b.values.map((v) => ({ label: show(v, 40) })) : [{ label: '' }];
    const { table, cells } = gridTable(a.input, rows, b ? b.input : '', cols);
    this.cells = cells;
    this.tasks = cells.map((line) => line.map(() => null));
    this.status = h('span', { class: 'muted small-text sweep-status' });
    this.el = h('article', { class: 'run sweep', dataset: { sweepId: id }, 'aria-label': `sweep ${label}` },
      h('header', {},
        h('div', { class: 'run-title' }, h('strong', { text: `Sweep · ${label}` }),
          h('span', { class: 'muted small-text', text: ` ${a.input}${b ? ` × ${b.input}` : ''}` })),
        this.status,
        h('div', { class: 'run-actions' },
          h('button', { type: 'button', class: 'small ghost', 'aria-label': 'dismiss', onclick: () => { this.el.remove(); onDismiss(this); } }, '×'))),
      h('div', { class: 'sweep-scroll' }, table));
    list.prepend(this.el);
  }

  cell(r, c) {
    return this.cells[r][c];
  }

  setTask(r, c, taskId) {
    this.tasks[r][c] = taskId;
    this.cells[r][c].dataset.taskId = taskId;
  }

  fill(r, c, task) {
    fillCell(this.cells[r][c], task, this.lightbox, `${this.label} · ${this.axes[0].input}=${show(this.axes[0].values[r])}`);
    this.refreshStatus();
  }

  fail(r, c, message) {
    const td = this.cells[r][c];
    clear(td).append(h('span', { class: 'status status-failed', text: 'not run' }), h('div', { class: 'small-text error-text', text: message }));
    td.dataset.status = 'failed';
    this.refreshStatus();
  }

  refreshStatus() {
    const all = this.cells.flat();
    const done = all.filter((td) => ['completed', 'failed', 'interrupted', 'timeout'].includes(td.dataset.status)).length;
    this.status.textContent = `${done}/${all.length} done`;
    this.el.dataset.status = done === all.length ? 'done' : 'running';
  }

  toJSON() {
    return { id: this.id, label: this.label, axes: this.axes, tasks: this.tasks };
  }
}

