// Outputs as what they are: images (with a lightbox), video and audio players, text inline, the rest
// as downloads. The kind comes from the task's `kind`/`content_type` fields; the file name's extension
// is the fallback for servers that send neither.

import { mediaUrl } from './api.js';
import { bytes, clear, h, safeUrl } from './dom.js';

const BY_EXTENSION = {
  image: ['png', 'jpg', 'jpeg', 'webp', 'gif', 'bmp', 'avif', 'apng'],
  video: ['mp4', 'webm', 'mov', 'mkv', 'm4v', 'avi'],
  audio: ['wav', 'mp3', 'flac', 'ogg', 'opus', 'm4a', 'aac'],
  text: ['txt', 'json', 'md', 'csv', 'srt'],
  '3d': ['glb', 'gltf', 'obj', 'ply', 'stl', 'fbx', 'usdz', 'usd'],
};
const KINDS = new Set(['image', 'video', 'audio', 'text', '3d', 'file']);
const TEXT_INLINE_MAX = 64 * 1024;

/** image | video | audio | text | 3d | file */
export function kindOf(out) {
  if (out && KINDS.has(out.kind)) return out.kind;
  const type = String((out && out.content_type) || '').toLowerCase();
  for (const kind of ['image', 'video', 'audio']) if (type.startsWith(`${kind}/`)) return kind;
  if (type.startsWith('text/') || type === 'application/json') return 'text';
  if (type.startsWith('model/')) return '3d';
  const ext = String((out && out.filename) || '').toLowerCase().split('.').pop();
  for (const [kind, list] of Object.entries(BY_EXTENSION)) if (list.includes(ext)) return kind;
  return 'file';
}

/** The text strings nodes reported (PreviewAny, LLM nodes): [{node, text}] from a task's node_outputs. */
export function textsOf(nodeOutputs) {
  const found = [];
  for (const [node, output] of Object.entries(nodeOutputs || {})) {
    if (!output || typeof output !== 'object') continue;
    const list = output.text ?? output.string ?? null;
    if (Array.isArray(list)) {
      for (const item of list) if (typeof item === 'string' || typeof item === 'number') found.push({ node, text: String(item) });
    } else if (typeof list === 'string') found.push({ node, text: list });
  }
  return found;
}

function caption(out) {
  return h('figcaption', { class: 'small-text' },
    h('span', { class: 'mono', text: out.filename }), ` · #${out.node_id} · ${bytes(out.size)}`,
    out.type && out.type !== 'output' ? ` · ${out.type}` : '');
}

function downloadLink(out, text) {
  const link = h('a', { download: out.filename, class: 'download' }, text || `⬇ ${out.filename}`);
  const url = safeUrl(out.url);
  if (url) mediaUrl(url).then((src) => { link.href = src; }).catch(() => {});
  return link;
}

/**
 * Render outputs into `gallery`; images open `lightbox`. `frames` are extra images already in hand
 * (SaveImageWebsocket) as {url (data:), node_id, filename}.
 */
export function renderOutputs(gallery, outputs, { lightbox, label = '' } = {}) {
  const images = [];
  for (const out of outputs) {
    const kind = kindOf(out);
    const url = safeUrl(out.url);
    if (!url && kind !== 'text') continue;
    const figure = h('figure', { class: `output-${kind}`, dataset: { kind, node: out.node_id ?? '' } });
    if (kind === 'image') {
      const index = images.length;
      const img = h('img', { class: 'output', alt: out.filename, loading: 'lazy' });
      const open = h('button', { type: 'button', class: 'thumb', title: 'open in the viewer',
        'aria-label': `view ${out.filename}`, onclick: () => lightbox && lightbox.open(images, index, label) }, img);
      const entry = { out, src: null };
      images.push(entry);
      mediaUrl(url).then((src) => { img.src = src; entry.src = src; }).catch(() => { img.alt = `${out.filename} (could not load)`; });
      figure.append(open, caption(out));
    } else if (kind === 'video' || kind === 'audio') {
      const player = h(kind, { class: `output ${kind}`, controls: true, preload: 'metadata', loop: kind === 'video' });
      if (kind === 'video') { player.muted = true; player.playsInline = true; }
      mediaUrl(url).then((src) => { player.src = src; }).catch(() => {});
      figure.append(player, caption(out), downloadLink(out, '⬇ download'));
    } else if (kind === 'text') {
      const pre = h('pre', { class: 'text-output' });
      if (typeof out.text === 'string') pre.textContent = out.text + (out.text_truncated ? '\n… (cut here: download for the rest)' : '');
      else if (url && (out.size ?? 0) <= TEXT_INLINE_MAX) {
        pre.textContent = '…';
        mediaUrl(url).then((src) => fetch(src)).then((r) => r.text())
          .then((text) => { pre.textContent = text; }).catch(() => { pre.textContent = '(could not load)'; });
      }
      figure.append(pre, caption(out), url ? downloadLink(out, '⬇ download') : null);
    } else {
      figure.append(downloadLink(out), caption(out), kind === '3d' ? h('span', { class: 'muted small-text', text: '3D model' }) : null);
    }
    gallery.append(figure);
  }
  return images;
}

/** A viewer for a run's images: zoom, previous/next, download one or all. One per page. */
export class Lightbox {
  constructor() {
    this.items = [];
    this.index = 0;
    this.zoomed = false;
    this.img = h('img', { class: 'lightbox-img', alt: '' });
    this.title = h('span', { class: 'lightbox-title grow ellipsis' });
    this.counter = h('span', { class: 'muted small-text' });
    this.download = h('a', { class: 'button small', download: '' }, 'Download');
    this.prevBtn = h('button', { type: 'button', class: 'small', 'aria-label': 'previous image', onclick: () => this.step(-1) }, '‹ Prev');
    this.nextBtn = h('button', { type: 'button', class: 'small', 'aria-label': 'next image', onclick: () => this.step(1) }, 'Next ›');
    this.zoomBtn = h('button', { type: 'button', class: 'small', 'aria-pressed': 'false', onclick: () => this.toggleZoom() }, 'Zoom 1:1');
    this.stage = h('div', { class: 'lightbox-stage' }, this.img);
    this.img.addEventListener('click', () => this.toggleZoom());
    this.dialog = h('dialog', { class: 'lightbox', 'aria-label': 'image viewer' },
      h('div', { class: 'row lightbox-bar' }, this.title, this.counter, this.prevBtn, this.nextBtn, this.zoomBtn,
        this.download,
        h('button', { type: 'button', class: 'small', onclick: () => this.downloadAll() }, 'Download all'),
        h('button', { type: 'button', class: 'small', 'aria-label': 'close', onclick: () => this.dialog.close() }, '×')),
      this.stage);
    this.dialog.addEventListener('keydown', (e) => {
      if (e.key === 'ArrowLeft') { e.preventDefault(); this.step(-1); }
      if (e.key === 'ArrowRight') { e.preventDefault(); this.step(1); }
      if (e.key === '+' || e.key === '=' || e.key === '-') { e.preventDefault(); this.toggleZoom(e.key !== '-'); }
    });
    document.body.append(this.dialog);
  }

  open(items, index, label) {
    this.items = items;
    this.label = label;
    this.show(index);
    if (!this.dialog.open) this.dialog.showModal();
  }

  show(index) {
    const n = this.items.length;
    this.index = ((index % n) + n) % n;
    const { out, src } = this.items[this.index];
    this.img.src = src || '';
    this.img.alt = out.filename;
    this.title.textContent = `${this.label ? `${this.label} · ` : ''}${out.filename}`;
    this.counter.textContent = `${this.index + 1} / ${n}`;
    this.download.setAttribute('download', out.filename);
    if (src) this.download.href = src;
    this.prevBtn.disabled = n < 2;
    this.nextBtn.disabled = n < 2;
    this.toggleZoom(false);
  }

  step(delta) {
    if (this.items.length) this.show(this.index + delta);
  }

  toggleZoom(on = !this.zoomed) {
    this.zoomed = on;
    this.stage.classList.toggle('zoomed', on);
    this.zoomBtn.setAttribute('aria-pressed', String(on));
    this.zoomBtn.textContent = on ? 'Fit' : 'Zoom 1:1';
  }

  downloadAll() {
    for (const { out, src } of this.items) {
      if (!src) continue;
      const a = h('a', { href: src, download: out.filename, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
    }
  }
}

/** A labelled grid of sweep results: rows × columns of run cells, each filled as its run finishes. */
export function gridTable(rowsLabel, rows, colsLabel, cols) {
  const table = h('table', { class: 'sweep-grid' });
  const head = h('tr', {}, h('th', { class: 'corner', scope: 'col', text: `${rowsLabel || ''}${colsLabel ? ` ╲ ${colsLabel}` : ''}` }));
  for (const c of cols) head.append(h('th', { scope: 'col', class: 'mono', text: c.label }));
  table.append(h('thead', {}, head));
  const body = h('tbody', {});
  const cells = [];
  for (const r of rows) {
    const tr = h('tr', {}, h('th', { scope: 'row', class: 'mono', text: r.label }));
    const line = [];
    for (let i = 0; i < cols.length; i++) {
      const td = h('td', { class: 'sweep-cell' }, h('span', { class: 'muted small-text', text: 'waiting' }));
      tr.append(td);
      line.push(td);
    }
    body.append(tr);
    cells.push(line);
  }
  table.append(body);
  return { table, cells };
}

export function fillCell(td, task, lightbox, label) {
  clear(td);
  td.dataset.status = task.status;
  const outs = (task.outputs || []).filter((o) => kindOf(o) !== 'text');
  if (task.status !== 'completed') {
    td.append(h('span', { class: `status status-${task.status}`, text: task.status }));
    if (task.error) td.append(h('div', { class: 'small-text error-text', text: task.error.message || task.error.type }));
    return;
  }
  const gallery = h('div', { class: 'gallery' });
  renderOutputs(gallery, outs.slice(0, 1), { lightbox, label });
  const texts = textsOf(task.node_outputs);
  for (const t of texts.slice(0, 1)) gallery.append(h('pre', { class: 'text-output', text: t.text }));
  td.append(gallery);
  if (!outs.length && !texts.length) td.append(h('span', { class: 'muted small-text', text: 'no output' }));
}

