// API keys: create a named key with a role (its secret is shown once), list them, revoke.
import { api, get } from '../api.js';
import { clearFieldErrors, showFieldErrors } from '../forms.js';
import { $, badge, clearNotices, confirmDialog, fmtDate, h, notice, placeholderRow, setBusy, showError, timeAgo, toast } from '../ui.js';

const ROLE_TONES = { read: 'neutral', edit: 'accent', publish: 'warn', admin: 'danger' };
const state = { keys: [] };

function renderKeys() {
  const tbody = $('#keys-table tbody');
  $('#keys-count').textContent = state.keys.length;
  if (!state.keys.length) return placeholderRow(tbody, 5, 'No named keys yet: only ADMIN_API_KEY opens the API.');
  tbody.replaceChildren(...state.keys.map((k) => h('tr', {},
    h('td', {}, h('strong', {}, k.name)),
    h('td', {}, badge(k.role, ROLE_TONES[k.role])),
    h('td', { class: 'nowrap' }, h('time', { datetime: k.created_at }, fmtDate(k.created_at))),
    h('td', { class: 'nowrap' }, k.last_used_at ? timeAgo(k.last_used_at) : h('span', { class: 'muted' }, 'never')),
    h('td', { class: 'right' }, h('button', {
      type: 'button', class: 'btn btn-small btn-ghost-danger', 'aria-label': `Revoke ${k.name}`, onclick: () => revoke(k),
    }, 'Revoke')),
  )));
}

async function reload() {
  state.keys = await get('/keys');
  renderKeys();
}

async function create(event) {
  event.preventDefault();
  const form = $('#key-create-form');
  const summary = $('#key-form-errors');
  clearFieldErrors(form, summary);
  const body = { name: $('#k-name').value.trim(), role: $('#k-role').value };
  if (!body.name) return showFieldErrors(form, summary, [{ key: 'name', message: 'Name the key.' }], { title: 'The key was not created:' });
  const note = $('#k-note').value.trim();
  const button = $('#key-save');
  setBusy(button, true, 'Creating…');
  let created;
  try {
    created = (await api('POST', '/keys', { body, headers: note ? { 'X-Change-Note': note } : {} })).data;
  } catch (err) {
    setBusy(button, false);
    if (err.status === 422 && err.fieldErrors.length) showFieldErrors(form, summary, err.fieldErrors, { title: 'The key was not created:' });
    else if (err.status === 409) showFieldErrors(form, summary, [{ key: 'name', message: err.detail }], { title: 'The key was not created:' });
    else showError(err, 'The key was not created');
    return;
  }
  setBusy(button, false);
  form.reset();
  $('#secret-title').textContent = `New ${created.role} key “${created.name}”`;
  $('#secret-value').textContent = created.secret;
  $('#secret-panel').hidden = false;
  toast('Key created.');
  await reload();
}

async function revoke(key) {
  const ok = await confirmDialog({
    title: `Revoke “${key.name}”?`,
    message: 'Requests with it are refused from now on (by every server within a second). This cannot be undone; create a new key instead.',
    confirm: 'Revoke key', danger: true,
  });
  if (!ok) return;
  try {
    await api('DELETE', `/keys/${encodeURIComponent(key.name)}`);
    toast(`Key “${key.name}” revoked.`);
    await reload();
  } catch (err) {
    showError(err, 'Could not revoke the key');
  }
}

export async function init() {
  $('#key-create-form').addEventListener('submit', create);
  $('#secret-done').addEventListener('click', () => { $('#secret-panel').hidden = true; $('#secret-value').textContent = ''; });
  try {
    await reload();
    clearNotices();
  } catch (err) {
    placeholderRow($('#keys-table tbody'), 5, err.status === 403 ? 'Only an admin key can see the keys.' : 'Could not load the keys.', 'error');
    if (err.status === 403) {
      notice('error', 'Sign in with ADMIN_API_KEY or a key with the admin role to manage keys.', { title: 'This key cannot manage keys.' });
      $('#key-save').disabled = true;
    } else showError(err, 'Could not load the keys');
  }
}
