// Campaigns: each campaign's progress (contacts per outcome), pause / resume / cancel,
// and one campaign's contacts with their attempts. Refreshes while a campaign runs.
import { api, get } from '../api.js';
import { $, badge, fmtDate, h, placeholderRow, showError, toast } from '../ui.js';

const state = { selected: null, timer: null };
const OUTCOMES = ['answered', 'busy', 'no_answer', 'failed', 'dialing', 'pending'];

function progressCell(c) {
  const p = c.progress;
  const pct = p.total ? Math.round((100 * p.done) / p.total) : 0;
  return h('td', { class: 'nowrap' },
    h('progress', { max: String(p.total), value: String(p.done), 'aria-label': `${c.name} progress` }),
    ` ${p.done} / ${p.total} done (${pct} %)`,
    h('div', { class: 'cell-sub' }, `${p.attempts} attempts`));
}

function outcomesCell(c) {
  const parts = OUTCOMES.filter((s) => c.progress.by_status[s]).map((s) => `${s.replace('_', ' ')} ${c.progress.by_status[s]}`);
  return h('td', {}, parts.join(' · ') || h('span', { class: 'muted' }, '—'));
}

async function change(c, action) {
  try {
    await api('POST', `/campaigns/${encodeURIComponent(c.id)}/${action}`);
    toast(`Campaign ${c.name}: ${action}`);
  } catch (err) {
    showError(err, `Could not ${action} the campaign`);
  }
  await load();
}

function actions(c) {
  const buttons = [];
  if (c.status === 'running') buttons.push(h('button', { type: 'button', class: 'btn btn-sm', onclick: () => change(c, 'pause') }, 'Pause'));
  if (c.status === 'paused') buttons.push(h('button', { type: 'button', class: 'btn btn-sm', onclick: () => change(c, 'resume') }, 'Resume'));
  if (c.status === 'running' || c.status === 'paused') {
    buttons.push(h('button', { type: 'button', class: 'btn btn-sm btn-danger', onclick: () => change(c, 'cancel') }, 'Cancel'));
  }
  buttons.push(h('button', { type: 'button', class: 'btn btn-sm', onclick: () => { state.selected = c; loadContacts(); } }, 'Contacts'));
  return h('td', { class: 'nowrap' }, ...buttons);
}

function row(c) {
  return h('tr', { 'data-campaign': c.id },
    h('td', { class: 'nowrap' }, h('time', { datetime: c.created_at }, fmtDate(c.created_at))),
    h('td', {}, c.name, h('div', { class: 'cell-sub mono-id' }, c.id, ' · ', c.agent_id || c.purpose || 'default route')),
    h('td', {}, badge(c.status)),
    progressCell(c), outcomesCell(c), actions(c));
}

async function loadContacts() {
  const c = state.selected;
  if (!c) return;
  $('#contacts-card').hidden = false;
  $('#contacts-of').textContent = c.name;
  const tbody = $('#contacts-table tbody');
  let page;
  try {
    page = await get(`/campaigns/${encodeURIComponent(c.id)}/contacts`, { query: { limit: 200 } });
  } catch (err) {
    placeholderRow(tbody, 6, 'Could not load the contacts.', 'error');
    showError(err, 'Could not load the contacts');
    return;
  }
  $('#contacts-count').textContent = page.total;
  tbody.replaceChildren(...page.items.map((x) => h('tr', {},
    h('td', { class: 'num' }, String(x.seq + 1)),
    h('td', { class: 'mono-id' }, x.phone),
    h('td', {}, badge(x.status)),
    h('td', { class: 'num' }, String(x.attempts)),
    h('td', { class: 'nowrap' }, x.next_attempt_at && x.status === 'pending' ? fmtDate(x.next_attempt_at) : h('span', { class: 'muted' }, '—')),
    h('td', {}, x.last_sip_status_code ? String(x.last_sip_status_code) : h('span', { class: 'muted' }, '—')),
  )));
}

async function load() {
  const tbody = $('#campaigns-table tbody');
  let page;
  try {
    page = await get('/campaigns', { query: { limit: 200 } });
  } catch (err) {
    placeholderRow(tbody, 6, 'Could not load the campaigns.', 'error');
    showError(err, 'Could not load the campaigns');
    return;
  }
  $('#campaigns-count').textContent = page.total;
  if (!page.items.length) placeholderRow(tbody, 6, 'No campaigns yet.');
  else tbody.replaceChildren(...page.items.map(row));
  if (state.selected) {
    state.selected = page.items.find((c) => c.id === state.selected.id) || state.selected;
    await loadContacts();
  }
  clearTimeout(state.timer);
  if (page.items.some((c) => c.status === 'running')) state.timer = setTimeout(load, 3000);
}

export async function init() {
  $('#campaigns-refresh').addEventListener('click', () => load());
  await load();
}
