// Sessions: filterable list (agent, status, date range), newest or slowest turn first, paged.
import { get, getAll } from '../api.js';
import { $, badge, duration, fmtDate, h, placeholderRow, showError } from '../ui.js';

const PAGE = 50;
const state = { offset: 0, total: 0, agents: [] };

/** Local midnight of a yyyy-mm-dd date (+ days) as an ISO instant. */
function dayStart(value, plusDays = 0) {
  const [y, m, d] = value.split('-').map(Number);
  return new Date(y, m - 1, d + plusDays).toISOString();
}

function filters() {
  return {
    agent_id: $('#s-agent').value, status: $('#s-status').value, from: $('#s-from').value, to: $('#s-to').value,
    sort: $('#s-sort').value,
  };
}

function syncUrl() {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(filters())) if (v) params.set(k, v);
  if (state.offset) params.set('offset', state.offset);
  const qs = params.toString();
  history.replaceState(null, '', qs ? `?${qs}` : location.pathname);
}

function row(s) {
  const href = `/sessions/${encodeURIComponent(s.session_id)}`;
  const agent = state.agents.find((a) => a.agent_id === s.agent_id);
  return h('tr', { class: 'row-link', onclick: (e) => { if (!e.target.closest('a')) location.href = href; } },
    h('td', { class: 'nowrap' }, h('time', { datetime: s.started_at }, fmtDate(s.started_at))),
    h('td', {}, h('a', { class: 'mono-id', href }, s.session_id), s.user_id ? h('div', { class: 'cell-sub' }, s.user_id) : null),
    h('td', {}, agent ? agent.name : s.agent_id,
      h('div', { class: 'cell-sub mono-id' }, s.agent_id, s.config_version ? ` · v${s.config_version}` : '')),
    h('td', {}, badge(s.status), s.degraded ? [' ', badge('degraded', 'warn', { title: s.degraded })] : null),
    h('td', { class: 'nowrap' }, s.status === 'active' ? h('span', { class: 'muted' }, 'ongoing') : duration(s.started_at, s.ended_at)),
    h('td', { class: 'nowrap num worst-turn' }, s.worst_turn_ms == null ? h('span', { class: 'muted' }, '—') : `${Math.round(s.worst_turn_ms)} ms`),
    h('td', {}, s.end_reason || h('span', { class: 'muted' }, '—')),
  );
}

async function load() {
  const f = filters();
  const tbody = $('#sessions-table tbody');
  placeholderRow(tbody, 7, 'Loading sessions…');
  syncUrl();
  let page;
  try {
    page = await get('/sessions', {
      query: {
        agent_id: f.agent_id, status: f.status,
        since: f.from ? dayStart(f.from) : '', until: f.to ? dayStart(f.to, 1) : '',
        order: f.sort === 'worst' ? 'worst_turn' : '', offset: state.offset, limit: PAGE,
      },
    });
  } catch (err) {
    placeholderRow(tbody, 7, 'Could not load the sessions.', 'error');
    showError(err, 'Could not load the sessions');
    return;
  }
  state.total = page.total;
  const filtered = [f.agent_id, f.status, f.from, f.to].some(Boolean);
  $('#sessions-count').textContent = page.total;
  if (!page.items.length) {
    placeholderRow(tbody, 7, filtered ? 'No session matches these filters.' : 'No sessions yet. Start one from the Talk page.');
  } else {
    tbody.replaceChildren(...page.items.map(row));
  }
  const first = page.items.length ? state.offset + 1 : 0;
  $('#pager-info').textContent = `${first}–${state.offset + page.items.length} of ${page.total}`;
  $('#pager-prev').disabled = state.offset === 0;
  $('#pager-next').disabled = state.offset + PAGE >= page.total;
}

export async function init() {
  const params = new URLSearchParams(location.search);
  try {
    state.agents = await getAll('/agents/config');
  } catch (err) {
    showError(err, 'Could not load the agents');
  }
  const select = $('#s-agent');
  const ids = new Set(state.agents.map((a) => a.agent_id));
  const wanted = params.get('agent_id');
  if (wanted && !ids.has(wanted)) state.agents.push({ agent_id: wanted, name: wanted });
  select.append(...state.agents.map((a) => h('option', { value: a.agent_id }, a.name === a.agent_id ? a.agent_id : `${a.name} (${a.agent_id})`)));
  select.value = wanted || '';
  $('#s-status').value = params.get('status') || '';
  $('#s-from').value = params.get('from') || '';
  $('#s-to').value = params.get('to') || '';
  $('#s-sort').value = params.get('sort') === 'worst' ? 'worst' : '';
  state.offset = Number(params.get('offset')) || 0;

  const form = $('#session-filters');
  form.addEventListener('submit', (e) => { e.preventDefault(); state.offset = 0; load(); });
  for (const el of form.querySelectorAll('select')) el.addEventListener('change', () => { state.offset = 0; load(); });
  form.addEventListener('reset', () => setTimeout(() => { state.offset = 0; load(); }));
  $('#pager-prev').addEventListener('click', () => { state.offset = Math.max(0, state.offset - PAGE); load(); });
  $('#pager-next').addEventListener('click', () => { state.offset += PAGE; load(); });
  await load();
}
