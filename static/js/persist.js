// What the page keeps in the browser's storage so a reload loses nothing: the loaded workflow and its
// edited values, the JSON tab's draft, the run cards and sweeps shown, and the labels of runs started
// here. One key per part, so that a run's label is written without rewriting a large workflow.

import { parseJSON, stringifyJSON } from './api.js';

const PREFIX = 'comfygate.debugger.';
const MAX_RUNS = 60;
const MAX_LABELS = 500;
const MAX_SWEEPS = 10;

function read(part, fallback) {
  try {
    const text = localStorage.getItem(PREFIX + part);
    return text ? parseJSON(text) : fallback;
  } catch {
    return fallback;
  }
}

function write(part, value) {
  try {
    if (value === null || value === undefined) localStorage.removeItem(PREFIX + part);
    else localStorage.setItem(PREFIX + part, stringifyJSON(value));
    return true;
  } catch {
    return false; // storage full or disabled: the page works on, it only forgets more on a reload
  }
}

export const persist = {
  /** Everything kept: {loaded, form, jsonDraft, runs, sweeps}. */
  load() {
    return {
      loaded: read('loaded', null),
      form: read('form', null),
      jsonDraft: read('jsonDraft', null),
      runs: read('runs', []),
      sweeps: read('sweeps', []),
    };
  },

  /** The loaded workflow: {described, source, name, label, pristine}; its edits start afresh. */
  saveLoaded(loaded) {
    if (!write('loaded', loaded) && loaded && loaded.source) write('loaded', { ...loaded, source: null });
    write('form', null);
    write('jsonDraft', null);
  },

  saveForm(snapshot, jsonDraft) {
    write('form', snapshot);
    write('jsonDraft', jsonDraft ?? null);
  },

  /** The task ids of the run cards shown, newest first. */
  saveRuns(ids) {
    write('runs', ids.slice(0, MAX_RUNS));
  },

  /** The sweep grids shown (their axes and task ids), the last ten. */
  saveSweeps(sweeps) {
    write('sweeps', sweeps.slice(-MAX_SWEEPS));
  },

  label(taskId) {
    return this.labels()[taskId] || null;
  },

  setLabel(taskId, label) {
    const labels = this.labels();
    labels[taskId] = label;
    const keys = Object.keys(labels);
    for (const k of keys.slice(0, Math.max(0, keys.length - MAX_LABELS))) delete labels[k];
    write('labels', labels);
  },

  labels() {
    return read('labels', {});
  },
};
