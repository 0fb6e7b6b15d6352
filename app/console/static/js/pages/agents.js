// Agents: the list of current versions, searchable and filterable.
import { getAll } from '../api.js';
import { $, badge, h, placeholderRow, showError, timeAgo } from '../ui.js';

let agents = [];

function row(a) {
  const vars = Object.keys(a.prompt_config.variables || {});
  const tools = a.tools.map((t) => t.name);
  const href = `/agents/${encodeURIComponent(a.agent_id)}`;
  return h('tr', { class: 'row-link', onclick: (e) => { if (!e.target.closest('a')) location.href = href; } },
    h('td', {},
      h('a', { class: 'cell-title', href }, a.name),
      h('div', { class: 'cell-sub mono-id' }, a.agent_id),
    ),
    h('td', {}, a.enabled ? badge('Enabled', 'success') : badge('Disabled', 'neutral')),
    h('td', {}, h('a', { class: 'version-pill', href: `${href}/history`, title: 'Version history' }, `v${a.version}`)),
    h('td', { class: 'chips-cell' }, vars.length ? vars.map((v) => h('code', { class: 'chip' }, v)) : h('span', { class: 'muted' }, '—')),
    h('td', { class: 'chips-cell' }, tools.length ? tools.map((t) => h('span', { class: 'chip chip-soft' }, t)) : h('span', { class: 'muted' }, '—')),
    h('td', {}, a.handoffs.length ? a.handoffs.map((x) => h('a', { class: 'chip chip-link', href: `/agents/${encodeURIComponent(x)}` }, x)) : h('span', { class: 'muted' }, '—')),
    h('td', { class: 'nowrap' }, timeAgo(a.updated_at)),
  );
}

function render() {
  const q = $('#agents-search').value.trim().toLowerCase();
  const enabled = $('#agents-filter').value;
  const shown = agents.filter((a) => (!q || a.agent_id.includes(q) || a.name.toLowerCase().includes(q))
    && (enabled === '' || String(a.enabled) === enabled));
  const tbody = $('#agents-table tbody');
  $('#agents-count').textContent = shown.length === agents.length ? agents.length : `${shown.length} of ${agents.length}`;
  if (!agents.length) {
    tbody.replaceChildren(h('tr', { class: 'placeholder-row' }, h('td', { colspan: 7 },
      'No agents yet. ', h('a', { href: '/agents/new' }, 'Create the first one'), '.')));
    return;
  }
  if (!shown.length) return placeholderRow(tbody, 7, 'No agent matches these filters.');
  tbody.replaceChildren(...shown.map(row));
}

export async function init() {
  $('#agents-search').addEventListener('input', render);
  $('#agents-filter').addEventListener('change', render);
  try {
    agents = await getAll('/agents/config');
  } catch (err) {
    placeholderRow($('#agents-table tbody'), 7, 'Could not load the agents.', 'error');
    showError(err, 'Could not load the agents');
    return;
  }
  render();
}
