// Webhooks: endpoints (add, change, enable/disable, rotate the secret, delete) and the
// deliveries of the one selected, with their last answer and a resend button.
import { api, get, getAll } from '../api.js';
import { clearFieldErrors, showFieldErrors } from '../forms.js';
import { $, $$, badge, clearNotices, confirmDialog, h, placeholderRow, setBusy, showError, timeAgo, toast } from '../ui.js';

// The event types the server knows (its OpenAPI document lists them under `webhooks`).
const state = { hooks: [], agents: [], types: [], editing: null, selected: null };

function showSecret(title, secret) {
  $('#secret-title').textContent = title;
  $('#secret-value').textContent = secret;
  $('#secret-panel').hidden = false;
  $('#secret-panel').scrollIntoView?.({ block: 'nearest' });
}

function statusBadge(hook) {
  if (hook.enabled) return badge('enabled', 'success');
  return h('span', {}, badge('disabled', 'neutral'),
    hook.disabled_reason ? h('div', { class: 'cell-sub' }, hook.disabled_reason) : null);
}

function renderHooks() {
  const tbody = $('#hooks-table tbody');
  $('#hooks-count').textContent = state.hooks.length;
  if (!state.hooks.length) return placeholderRow(tbody, 4, 'No endpoints yet: add one with the form.');
  tbody.replaceChildren(...state.hooks.map((w) => h('tr', { class: state.selected === w.id ? 'row-selected' : '' },
    h('td', {},
      h('div', { class: 'cell-title mono-id' }, w.url),
      h('div', { class: 'cell-sub' }, w.description || '', w.agent_id ? [' · agent ', h('code', {}, w.agent_id)] : null),
      h('div', { class: 'cell-sub mono-id' }, w.id)),
    h('td', {}, ...w.events.map((e) => h('div', {}, h('code', {}, e)))),
    h('td', {}, statusBadge(w)),
    h('td', {}, h('div', { class: 'hook-actions' },
      h('button', { type: 'button', class: 'btn btn-small', onclick: () => select(w), 'aria-label': `Deliveries of ${w.url}` }, 'Deliveries'),
      h('button', { type: 'button', class: 'btn btn-small', onclick: () => edit(w), 'aria-label': `Edit ${w.url}` }, 'Edit'),
      h('button', { type: 'button', class: 'btn btn-small', onclick: () => rotate(w), 'aria-label': `Rotate the secret of ${w.url}` }, 'Rotate secret'),
      h('button', { type: 'button', class: 'btn btn-small btn-ghost-danger', onclick: () => remove(w), 'aria-label': `Delete ${w.url}` }, 'Delete'))),
  )));
}

function renderForm(hook) {
  const chosen = new Set(hook ? hook.events : ['session.ended']);
  $('#w-events').replaceChildren(...state.types.map((t) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', name: 'events', value: t, checked: chosen.has(t) }), ' ', h('code', {}, t))));
  $('#w-agent').replaceChildren(
    h('option', { value: '' }, 'every agent'),
    ...state.agents.map((a) => h('option', { value: a.agent_id, selected: hook?.agent_id === a.agent_id }, `${a.name} (${a.agent_id})`)),
  );
}

function resetForm() {
  state.editing = null;
  const form = $('#hook-form');
  form.reset();
  clearFieldErrors(form, $('#hook-form-errors'));
  $('#hook-form-title').textContent = 'Add an endpoint';
  $('#hook-save').textContent = 'Add endpoint';
  $('#hook-cancel').hidden = true;
  renderForm(null);
}

function edit(hook) {
  resetForm();
  state.editing = hook.id;
  $('#w-url').value = hook.url;
  $('#w-description').value = hook.description;
  $('#w-enabled').checked = hook.enabled;
  renderForm(hook);
  $('#hook-form-title').textContent = 'Change endpoint';
  $('#hook-save').textContent = 'Save endpoint';
  $('#hook-cancel').hidden = false;
  $('#w-url').focus();
}

async function save(event) {
  event.preventDefault();
  const form = $('#hook-form');
  const summary = $('#hook-form-errors');
  clearFieldErrors(form, summary);
  const body = {
    url: $('#w-url').value.trim(),
    events: $$('#w-events input:checked').map((i) => i.value),
    agent_id: $('#w-agent').value || null,
    description: $('#w-description').value,
    enabled: $('#w-enabled').checked,
  };
  const errors = [];
  if (!body.url) errors.push({ key: 'url', message: 'Enter the URL to POST to.' });
  if (!body.events.length) errors.push({ key: 'events', message: 'Choose at least one event.' });
  if (errors.length) return showFieldErrors(form, summary, errors, { title: 'The endpoint was not saved:' });
  const button = $('#hook-save');
  setBusy(button, true, 'Saving…');
  let created = null;
  try {
    if (state.editing) await api('PATCH', `/webhooks/${encodeURIComponent(state.editing)}`, { body });
    else {
      if (!body.agent_id) delete body.agent_id;
      created = (await api('POST', '/webhooks', { body })).data;
    }
  } catch (err) {
    setBusy(button, false);
    if (err.status === 422 && err.fieldErrors.length) showFieldErrors(form, summary, err.fieldErrors, { title: 'The endpoint was not saved:' });
    else showError(err, 'The endpoint was not saved');
    return;
  }
  setBusy(button, false);
  toast(created ? 'Endpoint added.' : 'Endpoint saved.');
  if (created) showSecret('Signing secret of the new endpoint', created.secret);
  resetForm();
  await reload();
}

async function rotate(hook) {
  const ok = await confirmDialog({
    title: 'Rotate the signing secret?',
    message: 'A new secret is made and shown once. For 24 hours deliveries are signed with both, so your receiver can switch without missing any.',
    confirm: 'Rotate secret',
  });
  if (!ok) return;
  try {
    const { data } = await api('POST', `/webhooks/${encodeURIComponent(hook.id)}/rotate-secret`, { body: {} });
    showSecret('New signing secret', data.secret);
    await reload();
  } catch (err) {
    showError(err, 'Could not rotate the secret');
  }
}

async function remove(hook) {
  const ok = await confirmDialog({
    title: 'Delete this endpoint?', message: `${hook.url} gets no more deliveries; its delivery history is deleted too.`,
    confirm: 'Delete endpoint', danger: true,
  });
  if (!ok) return;
  try {
    await api('DELETE', `/webhooks/${encodeURIComponent(hook.id)}`);
    toast('Endpoint deleted.');
    if (state.selected === hook.id) { state.selected = null; $('#deliveries-card').hidden = true; }
    if (state.editing === hook.id) resetForm();
    await reload();
  } catch (err) {
    showError(err, 'Could not delete the endpoint');
  }
}

async function select(hook) {
  state.selected = hook.id;
  $('#deliveries-card').hidden = false;
  $('#deliveries-heading').firstChild.textContent = `Deliveries to ${hook.url} `;
  renderHooks();
  await loadDeliveries();
}

async function loadDeliveries() {
  const tbody = $('#deliveries-table tbody');
  const page = await get(`/webhooks/${encodeURIComponent(state.selected)}/deliveries`, { query: { status: $('#d-status').value, limit: 100 } });
  $('#deliveries-count').textContent = page.total;
  if (!page.items.length) return placeholderRow(tbody, 6, 'No deliveries yet.');
  tbody.replaceChildren(...page.items.map((d) => h('tr', {},
    h('td', {}, h('code', {}, d.event_type), h('div', { class: 'cell-sub mono-id' }, d.event_id)),
    h('td', {}, badge(d.status, { succeeded: 'success', failed: 'danger', pending: 'warn' }[d.status])),
    h('td', {}, String(d.attempts)),
    h('td', {}, d.last_status_code ? h('code', {}, String(d.last_status_code)) : null,
      d.last_error ? h('div', { class: 'cell-sub' }, d.last_error) : null),
    h('td', { class: 'nowrap' }, d.next_attempt_at ? timeAgo(d.next_attempt_at) : h('span', { class: 'muted' }, '—')),
    h('td', { class: 'right' }, h('button', { type: 'button', class: 'btn btn-small', onclick: () => resend(d) }, 'Resend')),
  )));
}

async function resend(delivery) {
  try {
    await api('POST', `/webhooks/${encodeURIComponent(delivery.webhook_id)}/deliveries/${encodeURIComponent(delivery.id)}/resend`);
    toast('Sent again: same webhook-id, fresh retry window.');
    await loadDeliveries();
  } catch (err) {
    showError(err, 'Could not resend');
  }
}

async function reload() {
  [state.hooks, state.agents] = await Promise.all([get('/webhooks'), getAll('/agents/config')]);
  clearNotices();
  renderHooks();
}

export async function init() {
  $('#hook-form').addEventListener('submit', save);
  $('#hook-cancel').addEventListener('click', resetForm);
  $('#secret-done').addEventListener('click', () => { $('#secret-panel').hidden = true; $('#secret-value').textContent = ''; });
  $('#d-status').addEventListener('change', () => loadDeliveries().catch((err) => showError(err, 'Could not load deliveries')));
  try {
    const doc = await fetch('/schema/openapi.json').then((r) => r.json());
    state.types = Object.keys(doc.webhooks || {}).sort();
    await reload();
  } catch (err) {
    placeholderRow($('#hooks-table tbody'), 4, 'Could not load the endpoints.', 'error');
    showError(err, 'Could not load the endpoints');
    return;
  }
  resetForm();
}
