// A line diff (longest common subsequence) of two texts, rendered as a unified view
// with a few lines of context around each change.
import { h } from './ui.js';

/** [{op: ' ' | '-' | '+', a: lineNoOld, b: lineNoNew, text}] */
export function diffLines(oldText, newText) {
  const a = oldText.split('\n');
  const b = newText.split('\n');
  // Trim the common head and tail: configs differ in a few places, and it keeps the
  // quadratic table small.
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
  const x = a.slice(start, endA);
  const y = b.slice(start, endB);
  const n = x.length;
  const m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  for (let k = 0; k < start; k++) out.push({ op: ' ', a: k + 1, b: k + 1, text: a[k] });
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push({ op: ' ', a: start + i + 1, b: start + j + 1, text: x[i] }); i++; j++; }
    else if (i < n && (j === m || lcs[i + 1][j] >= lcs[i][j + 1])) { out.push({ op: '-', a: start + i + 1, b: null, text: x[i] }); i++; }
    else { out.push({ op: '+', a: null, b: start + j + 1, text: y[j] }); j++; }
  }
  for (let k = 0; k < a.length - endA; k++) {
    out.push({ op: ' ', a: endA + k + 1, b: endB + k + 1, text: a[endA + k] });
  }
  return out;
}

const CONTEXT = 3;

/** A table of the diff, unchanged runs folded to CONTEXT lines around changes. */
export function renderDiff(lines, { label = 'Diff' } = {}) {
  const changed = lines.map((l) => l.op !== ' ');
  if (!changed.some(Boolean)) return h('p', { class: 'empty' }, 'These two versions are identical.');
  const keep = lines.map((_, idx) => {
    for (let d = -CONTEXT; d <= CONTEXT; d++) if (changed[idx + d]) return true;
    return false;
  });
  const rows = [];
  let folded = 0;
  const flushFold = () => {
    if (folded) rows.push(h('tr', { class: 'diff-fold' }, h('td', { colspan: 4 }, `⋯ ${folded} unchanged line${folded === 1 ? '' : 's'}`)));
    folded = 0;
  };
  lines.forEach((l, idx) => {
    if (!keep[idx]) { folded++; return; }
    flushFold();
    const cls = l.op === '+' ? 'diff-add' : l.op === '-' ? 'diff-del' : 'diff-ctx';
    rows.push(h('tr', { class: cls },
      h('td', { class: 'ln' }, l.a ?? ''),
      h('td', { class: 'ln' }, l.b ?? ''),
      h('td', { class: 'op', 'aria-label': l.op === '+' ? 'added' : l.op === '-' ? 'removed' : 'unchanged' }, l.op === ' ' ? '' : l.op === '+' ? '+' : '−'),
      h('td', { class: 'code' }, l.text),
    ));
  });
  flushFold();
  return h('table', { class: 'diff-table', 'aria-label': label }, h('tbody', {}, rows));
}
