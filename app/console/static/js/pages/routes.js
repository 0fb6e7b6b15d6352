// Routes: the purpose -> agent table, with one default and the phone numbers each route answers.
import { api, get, getAll } from '../api.js';
import { clearFieldErrors, showFieldErrors } from '../forms.js';
import { $, badge, clearNotices, confirmDialog, h, notice, placeholderRow, setBusy, showError, timeAgo, toast } from '../ui.js';

const state = { routes: [], agents: [], editing: null };

const agentName = (id) => state.agents.find((a) => a.agent_id === id);

function renderTable() {
  const tbody = $('#routes-table tbody');
  $('#routes-count').textContent = state.routes.length;
  if (!state.routes.length) return placeholderRow(tbody, 6, 'No routes yet: add one with the form.');
  const sorted = [...state.routes].sort((a, b) => (b.is_default - a.is_default) || a.purpose.localeCompare(b.purpose));
  tbody.replaceChildren(...sorted.map((r) => {
    const agent = agentName(r.agent_id);
    return h('tr', { class: r.is_default ? 'row-default' : '' },
      h('td', {}, h('code', { class: 'mono-id strong' }, r.purpose)),
      h('td', {},
        h('a', { class: 'cell-title', href: `/agents/${encodeURIComponent(r.agent_id)}` }, agent ? agent.name : r.agent_id),
        h('div', { class: 'cell-sub mono-id' }, r.agent_id, agent && !agent.enabled ? [' ', badge('disabled', 'neutral')] : null)),
      h('td', {}, (r.phone_numbers || []).length
        ? (r.phone_numbers || []).map((n, i) => [i ? ' ' : null, h('code', { class: 'mono-id' }, n)])
        : h('span', { class: 'muted' }, '—')),
      h('td', {}, r.is_default ? badge('Default', 'accent') : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'nowrap' }, timeAgo(r.updated_at)),
      h('td', { class: 'right nowrap' },
        h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Edit route ${r.purpose}`, onclick: () => edit(r) }, 'Edit'),
        ' ',
        h('button', { type: 'button', class: 'btn btn-small btn-ghost-danger', 'aria-label': `Delete route ${r.purpose}`, onclick: () => remove(r) }, 'Delete')),
    );
  }));
  if (!state.routes.some((r) => r.is_default)) {
    notice('warn', 'Sessions that name no purpose, or an unknown one, will be refused until a route is marked default.', { title: 'No default route.' });
  }
}

function renderAgentOptions(selected) {
  const select = $('#r-agent');
  select.replaceChildren(
    h('option', { value: '' }, 'Choose an agent…'),
    ...state.agents.map((a) => h('option', { value: a.agent_id, selected: a.agent_id === selected }, `${a.name} (${a.agent_id})${a.enabled ? '' : ' — disabled'}`)),
  );
}

function resetForm() {
  state.editing = null;
  const form = $('#route-form');
  form.reset();
  clearFieldErrors(form, $('#route-form-errors'));
  $('#r-purpose').readOnly = false;
  $('#route-form-title').textContent = 'Add a route';
  $('#route-save').textContent = 'Add route';
  $('#route-cancel').hidden = true;
  renderAgentOptions('');
}

function edit(route) {
  resetForm();
  state.editing = route.purpose;
  $('#r-purpose').value = route.purpose;
  $('#r-purpose').readOnly = true;
  renderAgentOptions(route.agent_id);
  $('#r-default').checked = route.is_default;
  $('#r-numbers').value = (route.phone_numbers || []).join(', ');
  $('#route-form-title').textContent = `Change route “${route.purpose}”`;
  $('#route-save').textContent = 'Save route';
  $('#route-cancel').hidden = false;
  $('#r-agent').focus();
}

async function reload() {
  [state.routes, state.agents] = await Promise.all([get('/routes'), getAll('/agents/config')]);
  clearNotices();
  renderTable();
}

async function save(event) {
  event.preventDefault();
  const form = $('#route-form');
  const summary = $('#route-form-errors');
  clearFieldErrors(form, summary);
  const purpose = $('#r-purpose').value.trim();
  const agentId = $('#r-agent').value;
  const errors = [];
  if (!purpose) errors.push({ key: 'purpose', message: 'Enter a purpose.' });
  if (!agentId) errors.push({ key: 'agent_id', message: 'Choose the agent that answers.' });
  if (errors.length) return showFieldErrors(form, summary, errors, { title: 'The route was not saved:' });
  const button = $('#route-save');
  setBusy(button, true, 'Saving…');
  try {
    const numbers = $('#r-numbers').value.split(/[\s,;]+/).filter(Boolean);
    await api('PUT', `/routes/${encodeURIComponent(purpose)}`, { body: { agent_id: agentId, is_default: $('#r-default').checked, phone_numbers: numbers } });
  } catch (err) {
    setBusy(button, false);
    if (err.status === 422 && err.fieldErrors.length) showFieldErrors(form, summary, err.fieldErrors, { title: 'The route was not saved:' });
    else if (err.status === 409 && err.extra?.number) {
      // a number another route answers: shown on the numbers field, naming that route
      showFieldErrors(form, summary, [{ key: 'phone_numbers', message: err.detail }], { title: 'The route was not saved:' });
    }
    else showError(err, 'The route was not saved');
    return;
  }
  setBusy(button, false);
  toast(state.editing ? `Route “${purpose}” saved.` : `Route “${purpose}” added.`);
  resetForm();
  try {
    await reload();
  } catch (err) {
    showError(err, 'Could not reload the routes');
  }
}

async function remove(route) {
  const ok = await confirmDialog({
    title: `Delete route “${route.purpose}”?`,
    message: route.is_default
      ? 'This is the default route: without one, sessions with no known purpose are refused.'
      : `Sessions asking for “${route.purpose}” will go to the default route instead.`,
    confirm: 'Delete route',
    danger: true,
  });
  if (!ok) return;
  try {
    await api('DELETE', `/routes/${encodeURIComponent(route.purpose)}`);
    toast(`Route “${route.purpose}” deleted.`);
    if (state.editing === route.purpose) resetForm();
    await reload();
  } catch (err) {
    showError(err, 'Could not delete the route');
  }
}

export async function init() {
  $('#route-form').addEventListener('submit', save);
  $('#route-cancel').addEventListener('click', resetForm);
  try {
    await reload();
  } catch (err) {
    placeholderRow($('#routes-table tbody'), 6, 'Could not load the routes.', 'error');
    showError(err, 'Could not load the routes');
    return;
  }
  resetForm();
}
