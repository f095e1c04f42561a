// ARIA tabs (WAI-ARIA Authoring Practices): the selected tab is the one in the tab order; the arrow
// keys, Home and End move the selection along the list.

import { $$ } from './dom.js';

/** ARIA tabs: the selected tab is the one in the tab order; arrow keys, Home and End move along. */
export function selectTab(list, name, focus) {
  for (const tab of $$('[role="tab"]', list)) {
    const on = (tab.dataset.tab || tab.dataset.side) === name;
    tab.classList.toggle('active', on);
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    if (on && focus) tab.focus();
  }
}

export function wireTabs(list, onSelect) {
  const tabs = $$('[role="tab"]', list);
  for (const tab of tabs) {
    tab.addEventListener('click', () => onSelect(tab.dataset.tab || tab.dataset.side, false));
    tab.addEventListener('keydown', (e) => {
      const i = tabs.indexOf(tab);
      let next = null;
      if (e.key === 'ArrowRight') next = tabs[(i + 1) % tabs.length];
      else if (e.key === 'ArrowLeft') next = tabs[(i - 1 + tabs.length) % tabs.length];
      else if (e.key === 'Home') next = tabs[0];
      else if (e.key === 'End') next = tabs[tabs.length - 1];
      if (!next) return;
      e.preventDefault();
      onSelect(next.dataset.tab || next.dataset.side, true);
    });
  }
}
