// ComfyGate debugger: load a workflow, tune its parameters, run it, watch it, inspect what it made.

import { ApiError, api, parseJSON, stringifyJSON } from './js/api.js';
import { $, $$, clear, h } from './js/dom.js';
import { ParamForm, problemsOf } from './js/form.js';
import { HealthPanel, HistoryPanel, QueuePanel } from './js/panels.js';
import { FINAL, RunCard } from './js/runs.js';
import { LiveSocket } from './js/ws.js';

const state = {
  name: null, // the library name the workflow came from (or was saved as)
  label: null, // what run cards call it
  format: null,
  workflow: null, // API format
  pristine: false, // the workflow is the library's file as saved: runs name it (workflow_name)
  runs: new Map(), // task_id → RunCard
  early: new Map(), // task_id → messages that arrived before the submit answer
  jsonText: '', // what the JSON tab showed, to tell whether it was edited
  gateDown: false,
  submitBusy: null,
};

const form = new ParamForm($('#params'), { onUploadError: (err) => handleBusy(err) });

// --- notices --------------------------------------------------------------------------------------
function toast(message, kind = 'info') {
  const el = h('div', { class: `toast toast-${kind}`, text: message });
  $('#toasts').append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

const banners = new Map(); // reason → message
function setBanner(reason, message) {
  if (message) banners.set(reason, message);
  else banners.delete(reason);
  const banner = $('#banner');
  clear(banner);
  for (const [key, text] of banners) banner.append(h('div', { dataset: { reason: key }, text }));
  banner.hidden = banners.size === 0;
}

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

function showFormErrors(title, problems, unplaced) {
  const box = $('#form-errors');
  clear(box);
  if (!title) { box.hidden = true; return; }
  box.append(h('strong', { text: title }));
  if (unplaced.length) {
    const list = h('ul', {});
    for (const p of unplaced) list.append(h('li', { text: p.message }));
    box.append(list);
  } else if (problems.length) {
    box.append(h('span', { class: 'small-text', text: ` — ${problems.length} problem(s) marked below` }));
  }
  box.append(h('button', { type: 'button', class: 'small ghost', 'aria-label': 'dismiss', onclick: () => { box.hidden = true; } }, '×'));
  box.hidden = false;
}

// --- loading and saving workflows -----------------------------------------------------------------
function loadDescribed(described, { name = null, label = null, pristine = false } = {}) {
  state.workflow = described.workflow;
  state.pristine = Boolean(name && pristine);
  state.format = described.format;
  state.name = name;
  state.label = label || name || 'workflow';
  form.render(described.params || []);
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
  $('#run').disabled = false;
  $('#save').disabled = false;
  if (!$('[data-panel="json"]').hidden) fillJson();
  $('#library-select').value = name && libraryNames.has(name) ? name : '';
}

async function describe(workflow) {
  return api('/api/workflow/params', { json: { workflow } });
}

function reportLoadError(err, what) {
  if (handleBusy(err)) { toast(`could not load ${what}: ${err.message}`, 'error'); return; }
  const problems = problemsOf(err.body);
  const detail = problems.length ? problems.map((p) => p.message).join('; ') : err.message;
  toast(`could not load ${what}: ${detail}`, 'error');
  showFormErrors(`Could not load ${what}`, [], [{ message: detail }]);
}

async function loadFile(file) {
  if (!file) return;
  let data;
  try {
    data = parseJSON(await file.text());
  } catch (err) {
    toast(`${file.name} is not JSON: ${err.message}`, 'error');
    return;
  }
  try {
    const described = await describe(data);
    loadDescribed(described, { label: file.name });
    toast(`loaded ${file.name}`);
  } catch (err) {
    reportLoadError(err, file.name);
  }
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
    const described = await api(`/api/workflow/${encodeURIComponent(name)}`);
    loadDescribed(described, { name: described.name || name, pristine: true });
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
        // new default values for the same file (a UI-format file is then stored in API format)
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
    state.name = savedName;
    state.label = savedName;
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
  if (!name || !window.confirm(`Delete the saved workflow ${name}?`)) return;
  try {
    await api(`/api/workflow/${encodeURIComponent(name)}`, { method: 'DELETE' });
    toast(`deleted ${name}`);
    if (state.name === name) state.name = null;
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
    loadDescribed(described, { name: state.name, label: state.label || 'edited workflow' });
    $('#json-error').textContent = '';
    toast('JSON applied');
    return true;
  } catch (err) {
    const problems = problemsOf(err.body);
    $('#json-error').textContent = problems.length ? problems.map((p) => p.message).join('; ') : err.message;
    return false;
  }
}

function switchTab(name) {
  for (const tab of $$('.col-workflow .tab')) {
    const on = tab.dataset.tab === name;
    tab.classList.toggle('active', on);
    tab.setAttribute('aria-selected', String(on));
  }
  for (const panel of $$('.col-workflow .tab-panel')) panel.hidden = panel.dataset.panel !== name;
  if (name === 'json') fillJson();
}

// --- running --------------------------------------------------------------------------------------
async function run() {
  if (!state.workflow) return;
  const editedJson = !$('[data-panel="json"]').hidden && $('#json-editor').value !== state.jsonText;
  if (editedJson && !(await applyJson())) return;
  const workflow = state.workflow;
  const params = form.submitParams();
  const body = state.pristine && state.name ? { workflow_name: state.name, params } : { workflow, params };
  form.clearErrors();
  showFormErrors(null);
  const button = $('#run');
  button.disabled = true;
  try {
    await submit(body, { label: state.label, workflow, fromForm: true });
  } finally {
    button.disabled = false;
  }
}

async function submit(body, { label, workflow, fromForm = false }) {
  let answer;
  try {
    answer = await api('/api/workflow/submit', { json: body });
  } catch (err) {
    if (fromForm) showSubmitError(err);
    else toast(`not run: ${err.message}`, 'error');
    return null;
  }
  setBanner('busy', null);
  if (fromForm) form.showApplied(answer.params);
  const card = addCard({ ...answer, workflow_name: body.workflow_name }, { label, workflow, body });
  return card;
}

function showSubmitError(err) {
  if (handleBusy(err)) {
    showFormErrors('Not run: no backend can take it', [], [{ message: err.message }]);
    return;
  }
  const problems = problemsOf(err.body);
  const unplaced = problems.filter((p) => !form.place(p));
  const titles = {
    invalid_parameters: 'Not run: some parameters do not fit',
    prompt_rejected: 'Not run: ComfyUI refused the prompt',
    invalid_workflow: 'Not run: the workflow is not valid',
    unknown_node_class: 'Not run: a node class is not installed',
    unsupported_widget: 'Not run: a node cannot be converted exactly as ComfyUI would',
  };
  const title = titles[err.code] || `Not run: ${err.message}`;
  if (!problems.length) unplaced.push({ message: err.message });
  else if (err.code === 'prompt_rejected' && err.body.message) unplaced.unshift({ message: err.body.message });
  showFormErrors(title, problems, unplaced);
  form.revealFirst();
}

function addCard(task, { label, workflow, body }) {
  const existing = state.runs.get(task.task_id);
  if (existing) { existing.el.scrollIntoView({ block: 'nearest' }); return existing; }
  const hint = $('.empty-hint', $('#runs'));
  if (hint) hint.remove();
  const card = new RunCard($('#runs'), task, {
    label,
    workflow,
    onRerun: (c) => rerunCard(c),
    onUseParams: (c) => useParams(c),
    onDismiss: (c) => state.runs.delete(c.taskId),
    onError: (c, error) => {
      if (c.workflow && c.workflow === state.workflow) {
        form.setNodeError(error.node_id, `run ${c.taskId.slice(0, 8)}: ${error.exception_message || error.message}`, 'runtime-error');
      }
    },
  });
  card.body = body || null;
  state.runs.set(task.task_id, card);
  for (const message of state.early.get(task.task_id) || []) dispatch(message);
  state.early.delete(task.task_id);
  socket.send({ type: 'subscribe', task_id: task.task_id });
  return card;
}

async function rerunCard(card) {
  if (card.body) {
    const body = { ...card.body, params: card.params };
    await submit(body, { label: card.label, workflow: card.workflow });
  } else if (card.workflow) {
    await submit({ workflow: card.workflow, params: card.params }, { label: card.label, workflow: card.workflow });
  } else {
    await rerunTask({ task_id: card.taskId, workflow_name: card.body && card.body.workflow_name, params: card.params });
  }
}

/** Re-run a task from history with the same parameters (resolved seeds included). */
async function rerunTask(task) {
  const known = state.runs.get(task.task_id);
  if (known && known.workflow) return rerunCard(known);
  if (task.workflow_name) {
    return submit({ workflow_name: task.workflow_name, params: task.params || {} }, { label: task.workflow_name });
  }
  if (!state.workflow) { toast('this task ran an inline workflow from another page; load it first', 'error'); return null; }
  toast('the original workflow is not known here: re-running the loaded workflow with the task\'s parameters');
  return submit({ workflow: state.workflow, params: task.params || {} }, { label: state.label, workflow: state.workflow });
}

function useParams(card) {
  let placed = 0;
  for (const [key, value] of Object.entries(card.params || {})) if (form.set(key, value)) placed += 1;
  toast(`${placed} value(s) put in the form${card.workflow !== state.workflow ? ' (the loaded workflow may differ)' : ''}`);
}

async function openTask(taskId) {
  try {
    const task = await api(`/api/task/${encodeURIComponent(taskId)}`);
    const card = state.runs.get(taskId) || addCard(task, { label: task.workflow_name || 'task' });
    card.update(task);
    card.el.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
    card.el.classList.add('flash');
    setTimeout(() => card.el.classList.remove('flash'), 1200);
  } catch (err) {
    toast(`could not open task: ${err.message}`, 'error');
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
  switch (message.type) {
    case 'hello':
      if (Array.isArray(message.backends)) health.setHealth({ status: '…', backends: message.backends });
      syncBanner();
      break;
    case 'task_update':
      if (card) card.update(message);
      else if (message.task_id) remember(message);
      if (FINAL.has(message.status)) refreshHistorySoon();
      if (message.status === 'queued' || FINAL.has(message.status)) refreshQueueSoon();
      break;
    case 'preview':
      if (card) card.showPreview(message.image);
      break;
    case 'text':
      if (card) card.addText(message.node, message.text);
      else if (message.task_id) remember(message);
      break;
    case 'node_output':
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
      if (info.reconnected) { resyncRuns(); refreshHealth(); queue.refresh(); }
    } else if (status === 'connecting') {
      setLive('connecting', 'connecting…');
    } else {
      setLive('closed', `updates offline · retry in ${Math.ceil(info.delay / 1000)} s`);
      if (info.failures >= 2) refreshHealth(); // a refused key or a gate that went away shows here
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
    setBanner('backends', `No ComfyUI backend is reachable — runs will be refused until one is back. ${names}`);
  } else if (status === 'degraded') {
    setBanner('backends', `Backend down: ${down.map((b) => `${b.name} (${b.url})`).join(', ')}; runs go to the others.`);
  } else {
    setBanner('backends', null);
  }
}

// --- wiring ---------------------------------------------------------------------------------------
const queue = new QueuePanel($('#queue-panel'), {
  onOpen: openTask,
  onChange: refreshHistorySoon,
  notify: toast,
});
const historyPanel = new HistoryPanel($('#history-panel'), { onOpen: openTask, onRerun: rerunTask });
const health = new HealthPanel($('#health-panel'), $('#backend-pills'));

function switchSide(name) {
  for (const tab of $$('.col-panels .tab')) {
    const on = tab.dataset.side === name;
    tab.classList.toggle('active', on);
    tab.setAttribute('aria-selected', String(on));
  }
  for (const panel of $$('.side-panel')) panel.hidden = panel.dataset.sidePanel !== name;
  if (name === 'queue') queue.refresh();
  if (name === 'history') historyPanel.refresh();
  if (name === 'health') refreshHealth();
}

function wire() {
  $('#file-input').addEventListener('change', (e) => {
    loadFile(e.target.files && e.target.files[0]);
    e.target.value = '';
  });
  $('#library-select').addEventListener('change', (e) => loadLibrary(e.target.value));
  $('#library-refresh').addEventListener('click', refreshLibrary);
  $('#library-delete').addEventListener('click', deleteWorkflow);
  $('#save').addEventListener('click', saveWorkflow);
  $('#run').addEventListener('click', run);
  $('#json-apply').addEventListener('click', applyJson);
  $('#json-reset').addEventListener('click', fillJson);
  $('#runs-clear').addEventListener('click', () => {
    for (const card of [...state.runs.values()]) if (card.final) card.dismiss();
  });
  $('#params').addEventListener('submit', (e) => e.preventDefault());
  for (const tab of $$('.col-workflow .tab')) tab.addEventListener('click', () => switchTab(tab.dataset.tab));
  for (const tab of $$('.col-panels .tab')) tab.addEventListener('click', () => switchSide(tab.dataset.side));
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !$('#run').disabled) { e.preventDefault(); run(); }
  });

  // A new API key: the WebSocket reconnects with it (?token=…).
  window.addEventListener('comfygate:apikey', () => socket.reconnect());

  // Drag and drop, anywhere on the page.
  const overlay = $('#drop-overlay');
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');
  document.addEventListener('dragenter', (e) => { if (hasFiles(e)) { depth += 1; overlay.hidden = false; } });
  document.addEventListener('dragleave', () => { depth = Math.max(0, depth - 1); if (!depth) overlay.hidden = true; });
  document.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
  document.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    overlay.hidden = true;
    const file = e.dataTransfer.files[0];
    if (file && /\.(png|jpe?g|webp)$/i.test(file.name)) {
      toast('drop images on a LoadImage field\'s upload button; this drop expects a workflow JSON', 'error');
      return;
    }
    loadFile(file);
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

// For tests and the console: a read-only peek at the page's state.
window.comfygate = { state, form, socket };
