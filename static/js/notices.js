// Notices: toasts, the screen reader's live region, and the banner of standing problems.

import { $, clear, h } from './dom.js';

export function toast(message, kind = 'info') {
  const el = h('div', { class: `toast toast-${kind}`, text: message });
  $('#toasts').append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

export function announce(text) {
  const el = $('#announce');
  el.textContent = '';
  setTimeout(() => { el.textContent = text; }, 30);
}

const banners = new Map(); // reason → message
export function setBanner(reason, message) {
  if (message) banners.set(reason, message);
  else banners.delete(reason);
  const banner = $('#banner');
  clear(banner);
  for (const [key, text] of banners) banner.append(h('div', { dataset: { reason: key }, text }));
  banner.hidden = banners.size === 0;
}
