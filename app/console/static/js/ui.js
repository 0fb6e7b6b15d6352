// Small DOM helpers shared by the pages. Text always goes in as text nodes (never
// innerHTML), so names and transcripts from the API cannot inject markup.

/** h('a', {href, class, onclick}, 'text', child...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replace el's children; arrays are flattened and null/false/undefined dropped. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

const TONES = {
  enabled: 'success', completed: 'success', active: 'info', disabled: 'neutral',
  failed: 'danger', abandoned: 'warn', default: 'accent', current: 'accent',
  passed: 'success', running: 'info', queued: 'neutral',
};

export function badge(text, tone = TONES[String(text).toLowerCase()] || 'neutral', attrs = {}) {
  return h('span', { class: `badge badge-${tone}`, ...attrs }, text);
}

// ------------------------------------------------------------------ dates

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

export const fmtDate = (iso) => (iso ? dateFmt.format(new Date(iso)) : '—');
export const fmtTime = (iso) => (iso ? timeFmt.format(new Date(iso)) : '');

export function ago(iso) {
  if (!iso) return '—';
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 45) return 'just now';
  const units = [[60, 'minute'], [24, 'hour'], [30, 'day'], [12, 'month'], [Infinity, 'year']];
  let n = s / 60;
  let unit = 'minute';
  for (const [size, name] of units) {
    unit = name;
    if (n < size) break;
    n /= size;
  }
  const r = Math.round(n);
  return `${r} ${unit}${r === 1 ? '' : 's'} ago`;
}

/** <time> showing "3 minutes ago" with the full date as its tooltip. */
export const timeAgo = (iso) => h('time', { datetime: iso || '', title: fmtDate(iso) }, ago(iso));

// US dollars: cents for sums, six decimals for the fractions of a cent one call costs.
export function usd(x) {
  if (x === null || x === undefined) return '—';
  const v = Number(x);
  return v !== 0 && Math.abs(v) < 0.01 ? `$${v.toFixed(6)}` : `$${v.toFixed(2)}`;
}

export function duration(startIso, endIso) {
  if (!startIso || !endIso) return '—';
  let s = Math.max(0, Math.round((new Date(endIso) - new Date(startIso)) / 1000));
  const hrs = Math.floor(s / 3600);
  s -= hrs * 3600;
  const min = Math.floor(s / 60);
  s -= min * 60;
  if (hrs) return `${hrs} h ${min} min`;
  if (min) return `${min} min ${s} s`;
  return `${s} s`;
}

// ------------------------------------------------------------------ notices

/**
 * Show a banner in `#notices` (or `container`). kind: info | success | warn | error.
 * `actions` is a list of nodes (buttons, links). Returns the banner element.
 */
export function notice(kind, message, { title, actions = [], container, replace = true } = {}) {
  const box = container || document.getElementById('notices');
  if (replace) box.replaceChildren();
  const el = h('div', { class: `notice notice-${kind}`, role: kind === 'error' || kind === 'warn' ? 'alert' : 'status' },
    h('div', { class: 'notice-text' }, title ? h('strong', {}, title, ' ') : null, message),
    actions.length ? h('div', { class: 'notice-actions' }, actions) : null,
  );
  box.append(el);
  if (kind === 'error' || kind === 'warn') el.scrollIntoView({ block: 'nearest' });
  return el;
}

export function clearNotices(container) {
  (container || document.getElementById('notices')).replaceChildren();
}

/** A failed API call as a banner; 401s are left to the key prompt. */
export function showError(err, what = 'Request failed', opts = {}) {
  if (err?.status === 401) return null;
  const message = err?.detail || String(err);
  return notice('error', message, { title: `${what}:`, ...opts });
}

/** The "changed by someone else" banner for a 412, with a Reload button. */
export function showConflict(err, opts = {}) {
  const v = err?.currentVersion;
  return notice('warn',
    `Someone saved ${v ? `version ${v} of ` : ''}this agent after you opened it, so your changes were not saved. ` +
    'Reload to see the latest version, then apply your edits again.',
    {
      title: 'Changed by someone else.',
      actions: [h('button', { type: 'button', class: 'btn btn-small', onclick: () => location.reload() }, 'Reload')],
      ...opts,
    });
}

export function toast(message, kind = 'success') {
  const region = document.getElementById('toasts');
  const el = h('div', { class: `toast toast-${kind}` }, message);
  region.append(el);
  setTimeout(() => el.classList.add('leaving'), 3800);
  setTimeout(() => el.remove(), 4300);
}

/** A message to show on the next page (e.g. after a delete redirects to the list). */
export function flash(message, kind = 'success') {
  sessionStorage.setItem('voice-platform.flash', JSON.stringify({ message, kind }));
}

export function showFlash() {
  const raw = sessionStorage.getItem('voice-platform.flash');
  if (!raw) return;
  sessionStorage.removeItem('voice-platform.flash');
  try {
    const { message, kind } = JSON.parse(raw);
    toast(message, kind);
  } catch { /* ignore */ }
}

/** A modal yes/no question; resolves true when confirmed. */
export function confirmDialog({ title, message, confirm = 'Confirm', danger = false }) {
  return new Promise((resolve) => {
    const titleId = `confirm-title-${Date.now()}`;
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId },
      h('form', { class: 'dialog-body', method: 'dialog' },
        h('h2', { id: titleId }, title),
        h('p', { class: 'muted' }, message),
        h('div', { class: 'dialog-actions' },
          h('button', { type: 'submit', value: 'cancel', class: 'btn' }, 'Cancel'),
          h('button', { type: 'submit', value: 'ok', class: `btn ${danger ? 'btn-danger' : 'btn-primary'}` }, confirm),
        ),
      ),
    );
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'ok');
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function placeholderRow(tbody, colspan, text, kind = '') {
  tbody.replaceChildren(h('tr', { class: `placeholder-row ${kind}` }, h('td', { colspan }, text)));
}

export function setBusy(button, busy, label) {
  if (busy) {
    button.dataset.label = button.textContent;
    button.disabled = true;
    if (label) button.textContent = label;
  } else {
    button.disabled = false;
    if (button.dataset.label) button.textContent = button.dataset.label;
  }
}

export function setTitle(text) {
  document.title = `${text} · Voice Platform`;
}
