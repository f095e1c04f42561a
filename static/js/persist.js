// What the page keeps in the browser's storage so a reload loses nothing: the loaded workflow and its
// edited values, the JSON tab's draft, the run cards shown, and the labels of runs started here.

import { parseJSON, stringifyJSON } from './api.js';

const KEY = 'comfygate.debugger.v2';
const MAX_RUNS = 60;
const MAX_LABELS = 500;

function read() {
  try {
    const text = localStorage.getItem(KEY);
    return text ? parseJSON(text) : {};
  } catch {
    return {};
  }
}

function write(data) {
  try {
    localStorage.setItem(KEY, stringifyJSON(data));
    return true;
  } catch {
    // storage full or disabled: keep at least the small parts (runs, labels, values)
    try {
      const { loaded, ...small } = data;
      localStorage.setItem(KEY, stringifyJSON({ ...small, loaded: loaded ? { ...loaded, source: null } : null }));
    } catch { /* nothing to do */ }
    return false;
  }
}

export const persist = {
  load() {
    return read();
  },

  /** The loaded workflow: {described, source, name, label, pristine} (null to forget it). */
  saveLoaded(loaded) {
    const data = read();
    data.loaded = loaded;
    data.form = null;
    data.jsonDraft = null;
    write(data);
  },

  saveForm(snapshot, jsonDraft) {
    const data = read();
    if (!data.loaded) return;
    data.form = snapshot;
    data.jsonDraft = jsonDraft ?? null;
    write(data);
  },

  /** The task ids of the run cards shown, newest first. */
  saveRuns(ids) {
    const data = read();
    data.runs = ids.slice(0, MAX_RUNS);
    write(data);
  },

  /** The sweep grids shown (their axes and task ids), the last ten. */
  saveSweeps(sweeps) {
    const data = read();
    data.sweeps = sweeps.slice(-10);
    write(data);
  },

  label(taskId) {
    return (read().labels || {})[taskId] || null;
  },

  setLabel(taskId, label) {
    const data = read();
    const labels = data.labels || {};
    labels[taskId] = label;
    const keys = Object.keys(labels);
    for (const k of keys.slice(0, Math.max(0, keys.length - MAX_LABELS))) delete labels[k];
    data.labels = labels;
    write(data);
  },

  labels() {
    return read().labels || {};
  },
};
