// Usage: sums per agent / version / UTC day over GET /api/v1/usage, and the price table.
import { get, getAll } from '../api.js';
import { $, badge, h, placeholderRow, showError, usd } from '../ui.js';

const n = (x) => Number(x || 0).toLocaleString();
const secs = (x) => `${Number(x || 0).toFixed(1)} s`;

function filters() {
  return {
    agent_id: $('#u-agent').value,
    from: $('#u-from').value,
    to: $('#u-to').value,
    group_by: [...document.querySelectorAll('#usage-filters input[name=group_by]:checked')].map((x) => x.value),
  };
}

function syncUrl(f) {
  const params = new URLSearchParams();
  if (f.agent_id) params.set('agent_id', f.agent_id);
  if (f.from) params.set('from', f.from);
  if (f.to) params.set('to', f.to);
  params.set('group_by', f.group_by.join(','));
  history.replaceState(null, '', `?${params}`);
}

/** The UTC midnight after `value` (yyyy-mm-dd) + days, as RFC 3339. */
function utcDay(value, plusDays = 0) {
  const d = new Date(`${value}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + plusDays);
  return d.toISOString();
}

function groupLabel(r) {
  const parts = [];
  if (r.agent_id !== null && r.agent_id !== undefined) parts.push(h('a', { href: `/agents/${encodeURIComponent(r.agent_id)}` }, r.agent_id));
  if (r.config_version !== null && r.config_version !== undefined) parts.push(` v${r.config_version}`);
  if (r.day) parts.push(h('div', { class: 'cell-sub' }, r.day));
  return parts.length ? parts : 'All sessions';
}

function cost(r) {
  return [usd(r.cost_usd), r.sessions_unpriced ? h('div', { class: 'hint hint-warn' }, `${r.sessions_unpriced} with an unpriced model`) : null];
}

function row(r) {
  return h('tr', {},
    h('td', {}, groupLabel(r)),
    h('td', {}, n(r.sessions), r.sessions_with_usage !== r.sessions ? h('div', { class: 'cell-sub' }, `${n(r.sessions_with_usage)} used a model`) : null),
    h('td', {}, `${n(r.llm_input_tokens)} / ${n(r.llm_cached_tokens)} / ${n(r.llm_output_tokens)}`),
    h('td', {}, secs(r.stt_audio_s)),
    h('td', {}, `${n(r.tts_characters)} chars`, h('div', { class: 'cell-sub' }, secs(r.tts_audio_s))),
    h('td', {}, cost(r)),
    h('td', {}, usd(r.analysis_cost_usd)));
}

async function load() {
  const f = filters();
  syncUrl(f);
  const tbody = $('#usage-table tbody');
  placeholderRow(tbody, 7, 'Loading usage…');
  let report;
  try {
    report = await get('/usage', {
      query: {
        agent_id: f.agent_id, group_by: f.group_by.join(','),
        since: f.from ? utcDay(f.from) : '', until: f.to ? utcDay(f.to, 1) : '',
      },
    });
  } catch (err) {
    placeholderRow(tbody, 7, 'Could not load the usage.', 'error');
    showError(err, 'Could not load the usage');
    return;
  }
  const t = report.total;
  $('#usage-total').replaceChildren(...[
    ['Sessions', n(t.sessions)],
    ['Call cost', [usd(t.cost_usd), t.sessions_unpriced ? [' ', badge(`${t.sessions_unpriced} partly unpriced`, 'warn')] : null]],
    ['Analysis cost', usd(t.analysis_cost_usd)],
    ['LLM tokens', `${n(t.llm_input_tokens)} in (${n(t.llm_cached_tokens)} cached), ${n(t.llm_output_tokens)} out`],
  ].flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  $('#usage-count').textContent = report.rows.length;
  if (!report.rows.length) placeholderRow(tbody, 7, 'No sessions in this range.');
  else tbody.replaceChildren(...report.rows.map(row));
}

async function loadPrices() {
  const tbody = $('#prices-table tbody');
  let prices;
  try {
    prices = await get('/usage/prices');
  } catch (err) {
    placeholderRow(tbody, 7, 'Could not load the price table.', 'error');
    return;
  }
  const p = (x) => (x ? `$${x}` : '—');
  tbody.replaceChildren(...prices.map((x) => h('tr', {},
    h('td', {}, h('code', { class: 'mono-id' }, x.model)),
    h('td', {}, p(x.input_per_mtok)), h('td', {}, p(x.cached_input_per_mtok)), h('td', {}, p(x.output_per_mtok)),
    h('td', {}, p(x.audio_per_minute)), h('td', {}, p(x.per_mchars)), h('td', {}, x.as_of || '—'))));
}

export async function init() {
  const params = new URLSearchParams(location.search);
  let agents = [];
  try {
    agents = await getAll('/agents/config');
  } catch (err) {
    showError(err, 'Could not load the agents');
  }
  const wanted = params.get('agent_id');
  if (wanted && !agents.some((a) => a.agent_id === wanted)) agents.push({ agent_id: wanted, name: wanted });
  $('#u-agent').append(...agents.map((a) => h('option', { value: a.agent_id }, a.agent_id)));
  $('#u-agent').value = wanted || '';
  $('#u-from').value = params.get('from') || '';
  $('#u-to').value = params.get('to') || '';
  if (params.has('group_by')) {
    const groups = params.get('group_by').split(',');
    for (const box of document.querySelectorAll('#usage-filters input[name=group_by]')) box.checked = groups.includes(box.value);
  }
  const form = $('#usage-filters');
  form.addEventListener('submit', (e) => { e.preventDefault(); load(); });
  for (const el of form.querySelectorAll('select, input[type=checkbox]')) el.addEventListener('change', load);
  await Promise.all([load(), loadPrices()]);
}
