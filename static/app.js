// ComfyGate debugger: load a workflow, tune its parameters, run it, watch it, inspect what it made.

import { ApiError, api, parseJSON, stringifyJSON } from './js/api.js';
import { $, $$, clear, h, short } from './js/dom.js';
import { ParamForm, problemsOf } from './js/form.js';
import { workflowFromMedia } from './js/metadata.js';
import { Lightbox } from './js/outputs.js';
import { HealthPanel, HistoryPanel, QueuePanel } from './js/panels.js';
import { persist } from './js/persist.js';
import { FINAL, RunCard } from './js/runs.js';
import { SweepDialog, SweepGrid } from './js/sweep.js';
import { announce, setBanner, toast } from './js/notices.js';
import { selectTab, wireTabs } from './js/tabs.js';
import { LiveSocket } from './js/ws.js';

const state = {
  name: null, // the library name the workflow came from (or was saved as)
  label: null, // what run cards call it
  format: null,
  workflow: null, // API format
  source: null, // the UI-format file, when the workflow came as one
  described: null,
  pristine: false, // the workflow is the library's file as saved: runs name it (workflow_name)
  runnable: true,
  runs: new Map(), // task_id → RunCard
  sweeps: new Map(), // sweep id → SweepGrid
  sweepTasks: new Map(), // task_id → {grid, r, c}
  early: new Map(), // task_id → messages that arrived before the submit answer
  jsonText: '', // what the JSON tab showed, to tell whether it was edited
  gateDown: false,
  submitting: 0,
};

const lightbox = new Lightbox();
let saveTimer = null;
function saveFormSoon() {
  clearTimeout(saveTimer);
  saveTimer = setTimeout(() => {
    const editor = $('#json-editor');
    const draft = !$('[data-panel="json"]').hidden && editor.value !== state.jsonText ? editor.value : null;
    persist.saveForm(form.snapshot(), draft);
  }, 250);
}
const form = new ParamForm($('#params'), { onUploadError: (err) => handleBusy(err), onChange: saveFormSoon });

// --- notices --------------------------------------------------------------------------------------
function handleBusy(err) {
  if (err instanceof ApiError && err.status === 503) {
    const retry = err.retryAfter ? ` (retry in ${err.retryAfter} s)` : '';
    setBanner('busy', `${err.message}${retry}`);
    setTimeout(() => setBanner('busy', null), (err.retryAfter || 5) * 1000);
    refreshHealth();
    return true;
  }
  if (err instanceof ApiError && err.status === 0) {
    setGateDown(true);
    return true;
  }
  return false;
}

function setGateDown(down) {
  state.gateDown = down;
  setBanner('gate', down ? `ComfyGate at ${location.host} is not answering; retrying…` : null);
}

/** The error box above the form: a title and every problem, each a link to its field. */
function showFormErrors(title, problems = []) {
  const box = $('#form-errors');
  clear(box);
  if (!title) { box.hidden = true; return; }
  box.append(h('strong', { text: title }));
  if (problems.length) {
    const list = h('ul', {});
    for (const p of problems) {
      const field = p.key ? form.fields.get(p.key) : null;
      const text = p.message;
      list.append(h('li', {}, field
        ? h('button', { type: 'button', class: 'link', onclick: () => focusField(p.key) }, text)
        : text));
    }
    box.append(list);
  }
  box.append(h('button', { type: 'button', class: 'small ghost', 'aria-label': 'dismiss', onclick: () => { box.hidden = true; } }, '×'));
  box.hidden = false;
}

function focusField(key) {
  switchTab('form', { apply: false });
  const field = form.fields.get(key);
  if (!field) return;
  form.reveal(field.wrap);
  field.wrap.scrollIntoView({ block: 'center' });
  const focusable = $('input, textarea, select', field.wrap);
  if (focusable) focusable.focus({ preventScroll: true });
}

/** "#3 KSampler · steps: message" unless the message already names the node. */
function withNode(problem) {
  const field = problem.key ? form.fields.get(problem.key) : null;
  const p = field ? field.param : null;
  const nodeId = problem.node_id ?? (p && p.node_id);
  const named = new RegExp(`(#|\\bnode\\s+)${String(nodeId).replace(/[^\w:]/g, '')}\\b`);
  if (nodeId === null || nodeId === undefined || named.test(String(problem.message))) return problem;
  const title = p ? (p.title || p.class_type) : ((state.workflow || {})[nodeId] || {}).class_type || '';
  const input = problem.input || (p && p.input);
  return { ...problem, message: `#${nodeId} ${title}${input ? ` · ${input}` : ''}: ${problem.message}` };
}

// --- loading and saving workflows -----------------------------------------------------------------
function loadDescribed(described, { name = null, label = null, pristine = false, source = null, keep = false } = {}) {
  state.described = described;
  state.workflow = described.workflow;
  state.source = source;
  state.pristine = Boolean(name && pristine);
  state.format = described.format;
  state.name = name;
  state.label = label || name || 'workflow';
  state.runnable = described.runnable !== false;
  form.render(described.params || [], { source, format: described.format });
  form.clearErrors();
  showFormErrors(null);
  $('#wf-name').value = (name || label || '').replace(/\.json$/, '');
  const nodes = Object.keys(state.workflow || {}).length;
  const info = $('#wf-info');
  clear(info);
  info.append(
    h('strong', { text: state.label }),
    ` · ${described.format === 'ui' ? 'UI format, converted to API' : 'API format'} · ${nodes} node(s) · `
      + `${(described.params || []).length} parameter(s)`,
  );
  showMissing(described);
  $('#run').disabled = !state.runnable;
  $('#sweep').disabled = !state.runnable || !form.fields.size;
  $('#save').disabled = !state.runnable;
  if (!$('[data-panel="json"]').hidden) fillJson();
  $('#library-select').value = name && libraryNames.has(name) ? name : '';
  if (!keep) persist.saveLoaded({ described, source, name, label: state.label, pristine: state.pristine });
  updateTitle();
}

/** Every node class that is not installed and every file the backend does not have, listed. */
function showMissing(described) {
  const box = $('#wf-missing');
  clear(box);
  const classes = described.missing_classes || [];
  const files = form.missingFiles();
  if (!classes.length && !files.length) { box.hidden = true; return; }
  if (classes.length) {
    const names = [...new Set(classes.map((m) => m.class_type))];
    box.append(h('strong', { text: `Not installed on the backend: ${names.length} node class(es) — shown for viewing, cannot run` }));
    const list = h('ul', { class: 'missing-classes' });
    for (const name of names) {
      const ids = classes.filter((m) => m.class_type === name).map((m) => `#${m.node_id}`).join(', ');
      list.append(h('li', {}, h('span', { class: 'mono', text: name }), ` (${ids})`));
    }
    box.append(list);
  }
  if (files.length) {
    box.append(h('strong', { text: `Files the backend does not have: ${files.length}` }));
    const list = h('ul', { class: 'missing-files' });
    for (const f of files) {
      list.append(h('li', {}, h('span', { class: 'mono', text: f.value }),
        ` — #${f.param.node_id} ${f.param.title || f.param.class_type} · ${f.param.input}`));
    }
    box.append(list);
  }
  box.hidden = false;
}

async function describe(workflow) {
  return api('/api/workflow/params?partial=true', { json: { workflow } });
}

function reportLoadError(err, what) {
  if (handleBusy(err)) { toast(`could not load ${what}: ${err.message}`, 'error'); return; }
  const problems = problemsOf(err.body);
  const detail = problems.length ? problems.map((p) => p.message).join('; ') : err.message;
  toast(`could not load ${what}: ${detail}`, 'error');
  showFormErrors(`Could not load ${what} (the form still holds ${state.label || 'nothing'})`, [{ message: detail }]);
}

const MEDIA = /\.(png|webp|mp4|mov|m4v)$/i;

async function loadFile(file) {
  if (!file) return;
  if (MEDIA.test(file.name) || /^(image|video)\//.test(file.type)) { await loadMedia(file); return; }
  let data;
  try {
    data = parseJSON(await file.text());
  } catch (err) {
    toast(`${file.name} is not JSON: ${err.message}`, 'error');
    return;
  }
  await loadWorkflowData(data, file.name);
}

async function loadWorkflowData(data, label) {
  try {
    const described = await describe(data);
    const source = described.format === 'ui' ? data : null;
    loadDescribed(described, { label, source });
    toast(`loaded ${label}`);
    return true;
  } catch (err) {
    reportLoadError(err, label);
    return false;
  }
}

/** A ComfyUI output: the UI workflow stored in it when there is one, else its API prompt. */
async function loadMedia(file) {
  let found;
  try {
    found = await workflowFromMedia(file);
  } catch (err) {
    toast(`could not read ${file.name}: ${err.message}`, 'error');
    return;
  }
  if (!found) {
    toast(`${file.name} holds no ComfyUI workflow (no "prompt" or "workflow" metadata)`, 'error');
    return;
  }
  if (found.workflow && Array.isArray(found.workflow.nodes) && found.workflow.nodes.length) {
    try {
      const described = await describe(found.workflow);
      loadDescribed(described, { label: file.name, source: found.workflow });
      toast(`loaded the workflow stored in ${file.name}`);
      return;
    } catch (err) {
      if (!found.prompt) { reportLoadError(err, file.name); return; }
    }
  }
  if (await loadWorkflowData(found.prompt, file.name)) toast(`loaded the prompt stored in ${file.name}`);
}

const libraryNames = new Set();
async function refreshLibrary() {
  let data;
  try {
    data = await api('/api/workflows');
  } catch (err) {
    handleBusy(err);
    return;
  }
  const select = $('#library-select');
  const keep = select.value;
  clear(select).append(h('option', { value: '', text: '— saved workflows —' }));
  libraryNames.clear();
  for (const wf of data.workflows || []) {
    libraryNames.add(wf.name);
    select.append(h('option', { value: wf.name, text: `${wf.name}${wf.format ? ` (${wf.format})` : ''}` }));
  }
  select.value = libraryNames.has(keep) ? keep : (state.name && libraryNames.has(state.name) ? state.name : '');
}

async function loadLibrary(name) {
  if (!name) return;
  try {
    const described = await api(`/api/workflow/${encodeURIComponent(name)}?include=source`);
    loadDescribed(described, { name: described.name || name, pristine: true, source: described.format === 'ui' ? described.source || null : null });
    toast(`loaded ${name}`);
  } catch (err) {
    reportLoadError(err, name);
  }
}

function currentWorkflow() {
  return form.applyTo(state.workflow);
}

async function saveWorkflow() {
  if (!state.workflow) return;
  let name = $('#wf-name').value.trim();
  if (!name) { toast('give the workflow a name to save it', 'error'); $('#wf-name').focus(); return; }
  if (!name.endsWith('.json')) name = `${name}.json`;
  const workflow = currentWorkflow();
  try {
    let saved;
    if (libraryNames.has(name)) {
      if (name !== state.name && !window.confirm(`Replace the saved workflow ${name}?`)) return;
      if (name === state.name && state.pristine) {
        if (state.format === 'ui' && !window.confirm(`${name} is in UI format; saving values stores it in API format. Go on?`)) return;
        const params = form.changedValues();
        if (!Object.keys(params).length) { toast('nothing changed'); return; }
        saved = await api('/api/workflow/update', { json: { name, params } });
      } else {
        saved = await api('/api/workflow/update', { json: { name, workflow } });
      }
    } else {
      const body = new FormData();
      body.append('file', new Blob([stringifyJSON(workflow, 2)], { type: 'application/json' }), name);
      body.append('name', name);
      saved = await api('/api/workflow/upload', { form: body });
    }
    const savedName = (saved && saved.name) || name;
    await refreshLibrary();
    loadDescribed(saved, { name: savedName, pristine: true }); // the form now mirrors the saved file
    toast(`saved as ${savedName}`);
  } catch (err) {
    handleBusy(err);
    toast(`save failed: ${err.message}`, 'error');
  }
}

async function deleteWorkflow() {
  const name = $('#library-select').value;
  if (!name) return;
  // two steps: a saved workflow (bundled examples included) is gone for good once deleted
  const typed = window.prompt(`Delete the saved workflow ${name} for good? Type its name to confirm.`);
  if (typed === null) return;
  if (typed.trim() !== name && `${typed.trim()}.json` !== name) { toast('the name did not match: nothing deleted', 'error'); return; }
  try {
    await api(`/api/workflow/${encodeURIComponent(name)}`, { method: 'DELETE' });
    toast(`deleted ${name}`);
    if (state.name === name) { state.name = null; state.pristine = false; }
    refreshLibrary();
  } catch (err) {
    toast(`delete failed: ${err.message}`, 'error');
  }
}

// --- the JSON tab ---------------------------------------------------------------------------------
function fillJson() {
  state.jsonText = state.workflow ? stringifyJSON(currentWorkflow(), 2) : '';
  $('#json-editor').value = state.jsonText;
  $('#json-error').textContent = '';
}

function jsonEdited() {
  return !$('[data-panel="json"]').hidden && $('#json-editor').value !== state.jsonText;
}

async function applyJson() {
  let data;
  try {
    data = parseJSON($('#json-editor').value);
  } catch (err) {
    $('#json-error').textContent = `not valid JSON: ${err.message}`;
    return false;
  }
  try {
    const described = await describe(data);
    loadDescribed(described, { name: null, label: state.label || 'edited workflow', source: described.format === 'ui' ? data : null });
    state.jsonText = $('#json-editor').value;
    $('#json-error').textContent = '';
    toast('JSON applied');
    return true;
  } catch (err) {
    const problems = problemsOf(err.body);
    $('#json-error').textContent = problems.length ? problems.map((p) => p.message).join('; ') : err.message;
    return false;
  }
}

/** Switch the workflow tabs; edits in the JSON tab are applied first (or the tab stays, with the error). */
async function switchTab(name, { apply = true, focus = false } = {}) {
  if (name === 'form' && apply && jsonEdited()) {
    if (!(await applyJson())) { toast('the JSON has an error: fix it or use "Reset from form"', 'error'); return false; }
  }
  selectTab($('#workflow-tabs'), name, focus);
  for (const panel of $$('.col-workflow .tab-panel')) panel.hidden = panel.dataset.panel !== name;
  if (name === 'json') fillJson();
  return true;
}

// --- running --------------------------------------------------------------------------------------
function formProblems() {
  const problems = form.check();
  if (!problems.length) return false;
  form.clearErrors();
  for (const p of problems) form.place(p);
  switchTab('form', { apply: false });
  showFormErrors('Not run: some values are not valid', problems);
  form.revealFirst();
  return true;
}

/** Run the form's workflow `times` times (Ctrl+Enter / the Run button; never dropped while one submits). */
async function run({ times = null } = {}) {
  if (!state.workflow) return;
  if (!state.runnable) { toast('this workflow uses node classes that are not installed: it can be viewed, not run', 'error'); return; }
  if (jsonEdited() && !(await applyJson())) return;
  if (formProblems()) return;
  const n = Math.max(1, Math.min(32, times ?? (Number($('#run-times').value) || 1)));
  const strategy = $('#run-seeds').value;
  const workflow = state.workflow;
  form.clearErrors();
  showFormErrors(null);
  const bodies = [];
  for (let i = 0; i < n; i++) {
    const params = n === 1 ? form.submitParams() : form.submitParams({ seedOffset: strategy === 'increment' ? i : 0, randomSeeds: strategy === 'random' });
    bodies.push(state.pristine && state.name ? { workflow_name: state.name, params } : { workflow, params });
  }
  if (n === 1 || strategy === 'increment') form.afterQueued(n);
  state.submitting += n;
  updateRunNote();
  try {
    for (const body of bodies) {
      const card = await submit(body, { label: state.label, workflow, fromForm: true });
      if (!card) break;
    }
  } finally {
    state.submitting -= n;
    updateRunNote();
  }
}

function updateRunNote() {
  $('#run-note').textContent = state.submitting ? `submitting ${state.submitting}…` : 'Ctrl+Enter runs';
}

async function submit(body, { label, workflow, fromForm = false, quiet = false }) {
  let answer;
  try {
    answer = await api('/api/workflow/submit', { json: body });
  } catch (err) {
    if (fromForm) showSubmitError(err);
    else if (!quiet) toast(`not run: ${err.message}`, 'error');
    if (quiet) throw err;
    return null;
  }
  setBanner('busy', null);
  if (fromForm) form.showApplied(answer.params);
  persist.setLabel(answer.task_id, label);
  if (quiet) return answer;
  return addCard({ ...answer, workflow_name: body.workflow_name }, { label, workflow: body.workflow || workflow, fromForm });
}

function showSubmitError(err) {
  switchTab('form', { apply: false });
  if (err instanceof ApiError && err.status === 0) {
    showFormErrors('Not run: ComfyGate is unreachable', [{ message: err.message }]);
    setGateDown(true);
    return;
  }
  if (handleBusy(err)) {
    showFormErrors('Not run: no backend can take it now', [{ message: err.message }]);
    return;
  }
  const raw = problemsOf(err.body);
  form.clearErrors();
  for (const p of raw) form.place(p);
  const problems = raw.map(withNode); // the list above the form names each problem's node
  const titles = {
    invalid_parameters: 'Not run: some parameters do not fit',
    prompt_rejected: 'Not run: ComfyUI refused the prompt',
    invalid_workflow: 'Not run: the workflow is not valid',
    unknown_node_class: 'Not run: a node class is not installed',
    unsupported_widget: 'Not run: a node cannot be converted exactly as ComfyUI would',
  };
  const title = titles[err.code] || `Not run: ${err.message}`;
  const list = problems.length ? problems : [{ message: err.message }];
  if (err.code === 'prompt_rejected' && err.body.message && problems.length) list.unshift({ message: err.body.message });
  showFormErrors(title, list);
  form.revealFirst();
}

function addCard(task, { label, workflow, fromForm = false, append = false }) {
  const existing = state.runs.get(task.task_id);
  if (existing) { existing.el.scrollIntoView({ block: 'nearest' }); return existing; }
  const hint = $('.empty-hint', $('#runs'));
  if (hint) hint.remove();
  const card = new RunCard($('#runs'), task, {
    label,
    workflow,
    lightbox,
    append,
    hooks: {
      onRerun: (c) => rerun(c.taskId, { card: c }),
      onRerunNewSeed: (c) => rerun(c.taskId, { card: c, newSeed: true }),
      onUseParams: (c) => useValues(c.taskId),
      onLoadIntoForm: (c) => loadTaskIntoForm(c.taskId),
      onDismiss: (c) => { state.runs.delete(c.taskId); saveRuns(); },
      onStatus: (c, status) => {
        if (FINAL.has(status)) { announce(`run ${short(c.taskId)} ${status}`); refreshFinal(c); }
        updateTitle();
      },
      onError: (c, error) => {
        if (c.fromForm && c.formWorkflow === state.workflow) {
          form.setNodeError(error.node_id, `run ${c.taskId.slice(0, 8)}: ${error.exception_message || error.message}`, 'runtime-error');
        }
      },
    },
  });
  card.fromForm = fromForm;
  card.formWorkflow = fromForm ? state.workflow : null;
  state.runs.set(task.task_id, card);
  for (const message of state.early.get(task.task_id) || []) dispatch(message);
  state.early.delete(task.task_id);
  socket.send({ type: 'subscribe', task_id: task.task_id });
  saveRuns();
  return card;
}

function saveRuns() {
  persist.saveRuns($$('#runs > .run[data-task-id]').map((el) => el.dataset.taskId));
}

/** A finished card fetches its task once: outputs, node outputs (text), cache hits, the workflow. */
async function refreshFinal(card) {
  try {
    card.update(await fetchTask(card.taskId));
  } catch { /* the update message had the essentials */ }
}

async function fetchTask(taskId) {
  return api(`/api/task/${encodeURIComponent(taskId)}?include=workflow`);
}

function seedKeysOf(workflow) {
  const keys = [];
  for (const [nodeId, node] of Object.entries(workflow || {})) {
    for (const name of ['seed', 'noise_seed']) {
      const v = node && node.inputs ? node.inputs[name] : undefined;
      if (typeof v === 'number' || typeof v === 'bigint') keys.push(`${nodeId}.${name}`);
    }
  }
  return keys;
}

function labelOf(task, card) {
  return (card && card.label) || persist.label(task.task_id) || task.workflow_name || 'workflow';
}

/** Run a task's own workflow again: same values and seed, or a new random seed. Never the loaded one. */
async function rerun(taskId, { card = null, newSeed = false } = {}) {
  let task;
  try {
    task = await fetchTask(taskId);
  } catch (err) {
    toast(`could not re-run ${short(taskId)}: ${err.message}`, 'error');
    return null;
  }
  const workflow = task.workflow;
  if (!workflow || !Object.keys(workflow).length) {
    toast(`task ${short(taskId)}'s workflow is no longer stored: it cannot be re-run`, 'error');
    return null;
  }
  const params = { ...(task.params || {}) };
  if (newSeed) for (const key of seedKeysOf(workflow)) params[key] = -1;
  return submit({ workflow, params }, { label: labelOf(task, card), workflow });
}

/** Put every value of a task's workflow in the loaded form (nodes matched by id and input). */
async function useValues(taskId) {
  if (!state.workflow) { loadTaskIntoForm(taskId); return; }
  let task;
  try { task = await fetchTask(taskId); } catch (err) { toast(`could not read the task: ${err.message}`, 'error'); return; }
  const placed = form.setFromWorkflow(task.workflow || {});
  const differs = Object.entries(task.workflow || {}).some(([id, n]) => !state.workflow[id] || state.workflow[id].class_type !== n.class_type);
  toast(`${placed} value(s) put in the form${differs ? ' (the loaded workflow differs from the task\'s: only matching nodes were set)' : ''}`);
}

/** Load a task's own workflow with all of its values (the seeds it ran with, fixed). */
async function loadTaskIntoForm(taskId) {
  let task;
  try { task = await fetchTask(taskId); } catch (err) { toast(`could not read the task: ${err.message}`, 'error'); return; }
  if (!task.workflow || !Object.keys(task.workflow).length) { toast('the task\'s workflow is no longer stored', 'error'); return; }
  try {
    const described = await describe(task.workflow);
    loadDescribed(described, { label: `${labelOf(task)} (task ${short(taskId)})` });
    form.setFromWorkflow(task.workflow);
    toast(`loaded task ${short(taskId)}'s workflow and values`);
  } catch (err) {
    reportLoadError(err, `task ${short(taskId)}`);
  }
}

async function openTask(taskId) {
  try {
    const task = await fetchTask(taskId);
    const card = state.runs.get(taskId) || addCard(task, { label: labelOf(task), workflow: task.workflow });
    card.update(task);
    card.el.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
    card.el.classList.add('flash');
    setTimeout(() => card.el.classList.remove('flash'), 1200);
    closeDrawer();
  } catch (err) {
    toast(`could not open task: ${err.message}`, 'error');
  }
}

// --- sweeps ---------------------------------------------------------------------------------------
const sweepDialog = new SweepDialog({ form, onRun: (axes) => runSweep(axes) });

async function runSweep(axes) {
  if (!state.workflow || formProblems()) return;
  const base = form.submitParams();
  for (const key of form.seedKeys()) {
    if (base[key] === -1) base[key] = Math.floor(Math.random() * 2 ** 48); // one seed for the whole grid
  }
  const id = `s${Date.now().toString(36)}`;
  const grid = new SweepGrid($('#runs'), { id, label: state.label, axes, lightbox, onDismiss: (g) => { state.sweeps.delete(g.id); saveSweeps(); } });
  const hint = $('.empty-hint', $('#runs'));
  if (hint) hint.remove();
  state.sweeps.set(id, grid);
  const [a, b] = axes;
  const cols = b ? b.values : [undefined];
  const workflow = state.workflow;
  for (const [r, va] of a.values.entries()) {
    for (const [c, vb] of cols.entries()) {
      const params = { ...base, [a.key]: va };
      if (b) params[b.key] = vb;
      const body = state.pristine && state.name ? { workflow_name: state.name, params } : { workflow, params };
      try {
        const answer = await submit(body, { label: state.label, workflow, quiet: true });
        grid.setTask(r, c, answer.task_id);
        state.sweepTasks.set(answer.task_id, { grid, r, c });
        socket.send({ type: 'subscribe', task_id: answer.task_id });
        for (const m of state.early.get(answer.task_id) || []) dispatch(m);
        state.early.delete(answer.task_id);
      } catch (err) {
        grid.fail(r, c, problemsOf(err.body).map((p) => p.message).join('; ') || err.message);
      }
    }
  }
  saveSweeps();
}

function saveSweeps() {
  persist.saveSweeps([...state.sweeps.values()].map((g) => g.toJSON()));
}

async function sweepTaskEnded(taskId) {
  const entry = state.sweepTasks.get(taskId);
  if (!entry) return;
  try {
    entry.grid.fill(entry.r, entry.c, await api(`/api/task/${encodeURIComponent(taskId)}`));
  } catch (err) {
    entry.grid.fail(entry.r, entry.c, err.message);
  }
}

// --- live updates ---------------------------------------------------------------------------------
function remember(message) {
  const list = state.early.get(message.task_id) || [];
  list.push(message);
  if (list.length > 50) list.shift();
  state.early.set(message.task_id, list);
  if (state.early.size > 200) state.early.delete(state.early.keys().next().value);
}

let historyTimer = null;
function refreshHistorySoon() {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(() => historyPanel.refresh(), 400);
}

let queueTimer = null;
function refreshQueueSoon() {
  if (queueTimer) return;
  queueTimer = setTimeout(() => { queueTimer = null; queue.refresh(); }, 300);
}

function dispatch(message) {
  const card = message.task_id ? state.runs.get(message.task_id) : null;
  const swept = message.task_id ? state.sweepTasks.get(message.task_id) : null;
  switch (message.type) {
    case 'hello':
      if (Array.isArray(message.backends)) health.setHealth({ status: '…', backends: message.backends });
      syncBanner();
      break;
    case 'task_update':
      if (card) card.update(message);
      else if (swept) { if (FINAL.has(message.status)) sweepTaskEnded(message.task_id); }
      else if (message.task_id) remember(message);
      if (FINAL.has(message.status)) refreshHistorySoon();
      if (message.status === 'queued' || FINAL.has(message.status)) refreshQueueSoon();
      updateTitle();
      break;
    case 'preview':
      if (card) card.showPreview(message.image, message.node);
      else if (message.task_id && !swept) remember(message);
      break;
    case 'text':
      if (card) card.addText(message.node, message.text);
      else if (message.task_id && !swept) remember(message);
      break;
    case 'node_output':
      if (card) card.addNodeOutput(message.node, message.output);
      else if (message.task_id && !swept) remember(message);
      break;
    case 'queue_update':
      health.setQueue(message.backend, message.queue_remaining);
      refreshQueueSoon();
      break;
    case 'backend_update':
      health.updateBackend(message);
      syncBanner();
      break;
    default:
      break;
  }
}

/** Progress in the tab's title, so a run can be watched from another tab. */
function updateTitle() {
  const active = [...state.runs.values()].filter((c) => !c.final);
  if (!active.length) { document.title = 'ComfyGate debugger'; return; }
  const running = active.filter((c) => c.status === 'running');
  const percent = running.length ? Math.round(running.reduce((s, c) => s + c.percent, 0) / running.length) : 0;
  document.title = `${running.length ? `${percent}% · ` : ''}${active.length} active · ComfyGate debugger`;
}

function setLive(kind, text) {
  const live = $('#live');
  live.className = `live live-${kind}`;
  live.textContent = text;
}

const socket = new LiveSocket({
  onMessage: dispatch,
  onState: (status, info = {}) => {
    if (status === 'open') {
      setLive('open', 'live updates');
      for (const card of state.runs.values()) socket.send({ type: 'subscribe', task_id: card.taskId });
      for (const taskId of state.sweepTasks.keys()) socket.send({ type: 'subscribe', task_id: taskId });
      if (info.reconnected) { resyncRuns(); refreshHealth(); queue.refresh(); }
    } else if (status === 'connecting') {
      setLive('connecting', 'connecting…');
    } else {
      setLive('closed', `updates offline · retry in ${Math.ceil(info.delay / 1000)} s`);
      if (info.failures >= 2) refreshHealth();
    }
  },
});

/** Ask for the state of every unfinished run (after a reconnect, or while the socket is down). */
async function resyncRuns() {
  const open = [...state.runs.values()].filter((c) => !c.final);
  await Promise.all(open.map(async (card) => {
    try {
      card.update(await api(`/api/task/${encodeURIComponent(card.taskId)}`));
    } catch { /* next round */ }
  }));
}

// --- health ---------------------------------------------------------------------------------------
async function refreshHealth() {
  try {
    const data = await api('/api/health');
    setGateDown(false);
    health.setHealth(data);
    state.held = (data.totals || {}).pending || 0;
    state.maxHeld = (data.totals || {}).max_pending || null;
  } catch (err) {
    if (err instanceof ApiError && err.status === 0) setGateDown(true);
  }
  syncBanner();
}

function syncBanner() {
  const down = health.downBackends();
  const status = health.status;
  if (status === 'down') {
    const names = down.map((b) => `${b.name} (${b.url})${b.last_error ? `: ${b.last_error}` : ''}`).join('; ');
    const held = state.held ? ` ${state.held} held now.` : '';
    setBanner('backends', `No ComfyUI backend is reachable — new runs are held by ComfyGate${state.maxHeld ? ` (up to ${state.maxHeld})` : ''} and start when one is back.${held} ${names}`);
  } else if (status === 'degraded') {
    setBanner('backends', `Backend down: ${down.map((b) => `${b.name} (${b.url})`).join(', ')}; runs go to the others.`);
  } else {
    setBanner('backends', null);
  }
}

// --- the side panels (a drawer below 1100 px) -----------------------------------------------------
const queue = new QueuePanel($('#queue-panel'), {
  onOpen: openTask,
  onChange: refreshHistorySoon,
  notify: toast,
});
const historyPanel = new HistoryPanel($('#history-panel'), {
  onOpen: openTask,
  onRerun: (task) => rerun(task.task_id),
  onLoad: (task) => { loadTaskIntoForm(task.task_id); closeDrawer(); },
  labels: () => persist.labels(),
});
const health = new HealthPanel($('#health-panel'), $('#backend-pills'));

function switchSide(name, focus = false) {
  selectTab($('#side-tabs'), name, focus);
  for (const panel of $$('.side-panel')) panel.hidden = panel.dataset.sidePanel !== name;
  if (name === 'queue') queue.refresh();
  if (name === 'history') historyPanel.refresh();
  if (name === 'health') refreshHealth();
}

function openDrawer() {
  document.body.classList.add('drawer-open');
  $('#drawer-toggle').setAttribute('aria-expanded', 'true');
  const tab = $('#side-tabs [aria-selected="true"]');
  if (tab) tab.focus();
}

function closeDrawer() {
  if (!document.body.classList.contains('drawer-open')) return;
  document.body.classList.remove('drawer-open');
  $('#drawer-toggle').setAttribute('aria-expanded', 'false');
}

// --- start: what the last visit left --------------------------------------------------------------
async function restore() {
  const data = persist.load();
  if (data.loaded && data.loaded.described) {
    const l = data.loaded;
    loadDescribed(l.described, { name: l.name, label: l.label, pristine: l.pristine, source: l.source, keep: true });
    form.restore(data.form);
    if (data.form && data.form.moreOpen !== null && form.more) form.more.open = data.form.moreOpen;
    if (data.jsonDraft) {
      await switchTab('json', { apply: false });
      $('#json-editor').value = data.jsonDraft;
    }
  }
  // run cards: the ones shown before the reload, and whatever is still active
  const ids = [...(data.runs || [])];
  try {
    const active = await api('/api/tasks?status=pending,queued,running&limit=50');
    for (const t of active.tasks) if (!ids.includes(t.task_id)) ids.unshift(t.task_id);
  } catch { /* the gate is down: the stored ids are tried below */ }
  const tasks = await Promise.all(ids.map((id) => fetchTask(id).catch(() => null)));
  for (const task of tasks) {
    if (!task || state.runs.has(task.task_id)) continue;
    addCard(task, { label: labelOf(task), workflow: task.workflow, append: true });
  }
  for (const s of data.sweeps || []) {
    const grid = new SweepGrid($('#runs'), { ...s, lightbox, onDismiss: (g) => { state.sweeps.delete(g.id); saveSweeps(); } });
    state.sweeps.set(s.id, grid);
    s.tasks.forEach((line, r) => line.forEach((taskId, c) => {
      if (!taskId) return;
      grid.setTask(r, c, taskId);
      state.sweepTasks.set(taskId, { grid, r, c });
      socket.send({ type: 'subscribe', task_id: taskId });
      sweepTaskEnded(taskId);
    }));
  }
  if (state.runs.size || state.sweeps.size) { const hint = $('.empty-hint', $('#runs')); if (hint) hint.remove(); }
  saveRuns();
  updateTitle();
}

// --- wiring ---------------------------------------------------------------------------------------
function wire() {
  $('#open-file').addEventListener('click', () => $('#file-input').click());
  $('#file-input').addEventListener('change', (e) => {
    loadFile(e.target.files && e.target.files[0]);
    e.target.value = '';
  });
  $('#library-select').addEventListener('change', (e) => loadLibrary(e.target.value));
  $('#library-refresh').addEventListener('click', refreshLibrary);
  $('#library-delete').addEventListener('click', deleteWorkflow);
  $('#save').addEventListener('click', saveWorkflow);
  $('#run').addEventListener('click', () => run());
  $('#sweep').addEventListener('click', () => { if (!formProblems()) sweepDialog.open(); });
  $('#json-apply').addEventListener('click', applyJson);
  $('#json-reset').addEventListener('click', fillJson);
  $('#json-editor').addEventListener('input', saveFormSoon);
  $('#runs-clear').addEventListener('click', () => {
    for (const card of [...state.runs.values()]) if (card.final) card.dismiss();
  });
  $('#params').addEventListener('submit', (e) => e.preventDefault());
  wireTabs($('#workflow-tabs'), (name, focus) => switchTab(name, { focus }));
  wireTabs($('#side-tabs'), (name, focus) => switchSide(name, focus));
  $('#drawer-toggle').addEventListener('click', () => {
    if (document.body.classList.contains('drawer-open')) closeDrawer(); else openDrawer();
  });
  $('#drawer-close').addEventListener('click', () => { closeDrawer(); $('#drawer-toggle').focus(); });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && state.workflow && !$('dialog[open]')) { e.preventDefault(); run({ times: 1 }); }
    if (e.key === 'Escape' && document.body.classList.contains('drawer-open')) { closeDrawer(); $('#drawer-toggle').focus(); }
  });

  // A new API key: the WebSocket reconnects with it (?token=…).
  window.addEventListener('comfygate:apikey', () => socket.reconnect());

  // Drag and drop, anywhere on the page: a workflow JSON, or a ComfyUI output holding one.
  const overlay = $('#drop-overlay');
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');
  document.addEventListener('dragenter', (e) => { if (hasFiles(e)) { depth += 1; overlay.hidden = false; } });
  document.addEventListener('dragleave', () => { depth = Math.max(0, depth - 1); if (!depth) overlay.hidden = true; });
  document.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
  document.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    if (e.target instanceof Element && e.target.closest('.image-picker')) return;
    e.preventDefault();
    depth = 0;
    overlay.hidden = true;
    loadFile(e.dataTransfer.files[0]);
  });

  // Clocks and fallbacks.
  setInterval(() => { for (const card of state.runs.values()) card.tick(); }, 200);
  setInterval(() => { if (!socket.open) resyncRuns(); }, 1500);
  setInterval(refreshHealth, 5000);
  setInterval(() => { if (!$('#queue-panel').hidden) queue.refresh(); }, 4000);
}

wire();
refreshHealth();
refreshLibrary();
queue.refresh();
socket.connect();
restore();

// For tests and the console: a read-only peek at the page's state.
window.comfygate = { state, form, socket };
