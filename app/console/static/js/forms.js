// Putting a 422's field errors next to the fields they name.
//
// Fields carry `data-field="<dotted API key>"`. An error's key is matched to the
// longest such path that is a prefix of it ("tools.0.http.url" -> "tools.0.http.url",
// else "tools.0.http", else "tools"); errors matching nothing go to the summary only.
import { h } from './ui.js';

const clean = (key) => String(key || '').replace(/^data\./, '');

function fieldFor(form, key) {
  const fields = [...form.querySelectorAll('[data-field]')];
  const byPath = new Map(fields.map((f) => [f.dataset.field, f]));
  let parts = clean(key).split('.').filter(Boolean);
  while (parts.length) {
    const f = byPath.get(parts.join('.'));
    if (f) return f;
    parts = parts.slice(0, -1);
  }
  return null;
}

const labelOf = (field) => {
  const label = field.querySelector(':scope > label, :scope > legend, :scope > .field-head > label, :scope > .field-head > .label, :scope > .section-head > h2');
  return label ? label.textContent.replace(/\(.*\)/, '').trim() : field.dataset.field;
};

export function clearFieldErrors(form, summary) {
  form.querySelectorAll('.server-error').forEach((el) => el.remove());
  form.querySelectorAll('[aria-invalid="true"]').forEach((el) => el.removeAttribute('aria-invalid'));
  form.querySelectorAll('.has-error').forEach((el) => el.classList.remove('has-error'));
  if (summary) {
    summary.hidden = true;
    summary.replaceChildren();
  }
}

/**
 * Show `errors` ([{key, message}]) inline and in `summary`; focuses the summary.
 * `describe(key)` may turn a key into a friendlier label for unmatched errors.
 */
export function showFieldErrors(form, summary, errors, { title = 'Please fix the following:' } = {}) {
  clearFieldErrors(form, summary);
  const items = [];
  errors.forEach((err, i) => {
    const field = fieldFor(form, err.key);
    if (field) {
      field.classList.add('has-error');
      const id = `server-error-${i}`;
      const msg = h('p', { class: 'field-error server-error', id }, err.message);
      const control = field.matches('input, select, textarea')
        ? field : field.querySelector('input:not([type=hidden]):not([disabled]), select:not([disabled]), textarea');
      if (control) {
        control.setAttribute('aria-invalid', 'true');
        const described = (control.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
        if (!described.includes(id)) control.setAttribute('aria-describedby', [...described, id].join(' '));
      }
      // After the control (or the field's header block), so it reads next to it.
      const anchor = field.querySelector(':scope > textarea, :scope > input, :scope > select, :scope > .table-wrap');
      if (anchor) anchor.after(msg); else field.append(msg);
      items.push(h('li', {}, h('a', {
        href: '#', onclick: (e) => { e.preventDefault(); (control || field).focus(); field.scrollIntoView({ block: 'center' }); },
      }, labelOf(field)), ': ', err.message));
    } else {
      items.push(h('li', {}, err.key ? `${err.key}: ` : '', err.message));
    }
  });
  if (summary) {
    summary.replaceChildren(h('p', { class: 'error-summary-title' }, title), h('ul', {}, items));
    summary.hidden = false;
    summary.focus();
    summary.scrollIntoView({ block: 'start', behavior: 'instant' });
  }
}
