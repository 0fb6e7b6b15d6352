// Version history of one agent: who saved each version and why (the audit trail), every
// change to the agent as an activity list, compare any two versions, roll back in one click.
import { api, get, getAll } from '../api.js';
import { diffLines, renderDiff } from '../diff.js';
import { $, badge, clearNotices, fmtDate, h, notice, placeholderRow, setTitle, showConflict, showError, timeAgo, toast } from '../ui.js';

const META = new Set(['version', 'created_at', 'updated_at']);
const state = { agentId: null, versions: [], from: null, to: null, audit: [], byVersion: new Map(),
  runs: [], tests: [], shown: null, poll: null };

const content = (v) => Object.fromEntries(Object.entries(v).filter(([k]) => !META.has(k)));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** A YAML-like rendering for diffing: multi-line strings become blocks, one line each. */
export function readable(value, indent = '') {
  const lines = [];
  const scalar = (v) => (typeof v === 'string' ? JSON.stringify(v) : String(v));
  const emit = (key, v, pad) => {
    const prefix = `${pad}${key}`;
    if (typeof v === 'string' && v.includes('\n')) {
      lines.push(`${prefix} |`);
      for (const line of v.replace(/\n$/, '').split('\n')) lines.push(`${pad}  ${line}`);
    } else if (Array.isArray(v)) {
      if (!v.length) { lines.push(`${prefix} []`); return; }
      lines.push(prefix);
      for (const item of v) {
        if (item && typeof item === 'object') {
          const inner = readable(item, `${pad}  `).split('\n');
          inner[0] = `${pad}- ${inner[0].trimStart()}`;
          lines.push(...inner);
        } else lines.push(`${pad}- ${scalar(item)}`);
      }
    } else if (v && typeof v === 'object') {
      if (!Object.keys(v).length) { lines.push(`${prefix} {}`); return; }
      lines.push(prefix);
      lines.push(readable(v, `${pad}  `));
    } else {
      lines.push(`${prefix} ${v === null ? 'null' : scalar(v)}`);
    }
  };
  for (const [k, v] of Object.entries(value)) emit(`${k}:`, v, indent);
  return lines.join('\n');
}

function changeSummary(v, idx) {
  if (idx === 0) return h('span', { class: 'muted' }, 'created');
  const cur = content(v);
  const restored = state.versions.slice(0, idx - 1).reverse().find((old) => same(content(old), cur));
  const prev = content(state.versions[idx - 1]);
  const keys = Object.keys({ ...prev, ...cur }).filter((k) => !same(prev[k], cur[k]));
  const parts = [];
  if (restored) parts.push(h('span', { class: 'chip chip-accent' }, `restores v${restored.version}`));
  if (!keys.length && !restored) parts.push(h('span', { class: 'muted' }, 'no changes'));
  else if (!restored) parts.push(...keys.map((k) => h('span', { class: 'chip chip-soft' }, k)));
  return parts;
}

function renderTable() {
  const tbody = $('#versions-table tbody');
  const current = state.versions.at(-1);
  $('#versions-count').textContent = state.versions.length;
  const rows = state.versions.map((v, idx) => {
    const isCurrent = v.version === current.version;
    return h('tr', { class: isCurrent ? 'row-current' : '' },
      h('td', {}, h('strong', {}, `v${v.version}`), isCurrent ? [' ', badge('Current', 'accent')] : null),
      h('td', { class: 'nowrap' }, h('time', { datetime: v.updated_at, title: timeAgo(v.updated_at).textContent }, fmtDate(v.updated_at))),
      h('td', { class: 'by-cell' }, who(state.byVersion.get(v.version))),
      h('td', {}, v.name),
      h('td', {}, v.enabled ? badge('Enabled', 'success') : badge('Disabled', 'neutral')),
      h('td', { class: 'chips-cell' }, changeSummary(v, idx)),
      h('td', { class: 'nowrap' }, testCell(v.version)),
      h('td', { class: 'center' }, h('input', {
        type: 'radio', name: 'from', value: v.version, checked: v.version === state.from,
        'aria-label': `Compare from version ${v.version}`, onchange: () => { state.from = v.version; renderDiffPanel(); },
      })),
      h('td', { class: 'center' }, h('input', {
        type: 'radio', name: 'to', value: v.version, checked: v.version === state.to,
        'aria-label': `Compare to version ${v.version}`, onchange: () => { state.to = v.version; renderDiffPanel(); },
      })),
      h('td', { class: 'right' }, isCurrent ? null : h('button', {
        type: 'button', class: 'btn btn-small', 'aria-label': `Roll back to version ${v.version}`,
        onclick: (e) => rollback(v.version, e.currentTarget),
      }, 'Roll back')),
    );
  });
  tbody.replaceChildren(...rows.reverse());
}

function renderDiffPanel() {
  const from = state.versions.find((v) => v.version === state.from);
  const to = state.versions.find((v) => v.version === state.to);
  const box = $('#diff');
  if (!from || !to) {
    box.replaceChildren(h('p', { class: 'empty' }, 'Pick two versions above to compare them.'));
    return;
  }
  if (state.versions.length === 1) {
    $('#diff-heading').textContent = 'Changes';
    box.replaceChildren(h('p', { class: 'empty' }, 'Only one version so far: edit the agent to have something to compare.'));
    return;
  }
  $('#diff-heading').textContent = `Changes from v${from.version} to v${to.version}`;
  const lines = diffLines(readable(content(from)), readable(content(to)));
  box.replaceChildren(renderDiff(lines, { label: `Changes from version ${from.version} to version ${to.version}` }));
}

// ------------------------------------------------------------------ test runs

const agentPath = () => `/agents/config/${encodeURIComponent(state.agentId)}`;
const unfinished = (run) => run.status === 'queued' || run.status === 'running';

function testCell(version) {
  const last = state.runs.find((r) => r.version === version);
  return [
    last ? h('button', { type: 'button', class: 'link-button', 'aria-label': `Show test run of version ${version}`,
      onclick: () => { state.shown = last.id; renderRuns(); } }, badge(last.status)) : h('span', { class: 'muted' }, 'not run'),
    ' ',
    h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Run tests against version ${version}`,
      disabled: !state.tests.length, title: state.tests.length ? '' : 'This agent has no stored tests',
      onclick: (e) => runTests(version, e.currentTarget) }, 'Run tests'),
  ];
}

function renderRuns() {
  $('#tests-count').textContent = state.tests.length;
  $('#tests-sub').textContent = state.tests.length
    ? `Stored tests: ${state.tests.map((t) => t.name).join(', ')}.`
    : 'This agent has no stored tests yet: add them with POST /api/v1/agents/config/{id}/tests.';
  const tbody = $('#runs-table tbody');
  if (!state.runs.length) {
    placeholderRow(tbody, 6, 'No test runs yet.');
  } else {
    tbody.replaceChildren(...state.runs.map((run) => h('tr', { class: run.id === state.shown ? 'row-current' : '' },
      h('td', {}, h('button', { type: 'button', class: 'link-button mono', onclick: () => { state.shown = run.id; renderRuns(); } }, run.id)),
      h('td', {}, `v${run.version}`),
      h('td', {}, badge(run.status)),
      h('td', {}, run.results.length ? `${run.results.filter((r) => r.passed).length}/${run.tests.length} passed` : `${run.tests.length} test(s)`),
      h('td', {}, run.actor || '—'),
      h('td', { class: 'nowrap' }, fmtDate(run.created_at)),
    )));
  }
  renderRunDetail();
  renderTable();
}

function renderRunDetail() {
  const box = $('#run-detail');
  const run = state.runs.find((r) => r.id === state.shown) || state.runs[0];
  if (!run) { box.replaceChildren(); return; }
  const head = h('h3', { class: 'card-title' }, `Run ${run.id} · version ${run.version} `, badge(run.status));
  const parts = [head];
  if (run.error) parts.push(h('p', { class: 'muted' }, run.error));
  if (unfinished(run)) parts.push(h('p', { class: 'muted' }, 'Running… results appear here as the tests finish.'));
  for (const result of run.results) {
    const failing = result.steps.filter((s) => !s.passed);
    parts.push(h('article', { class: 'test-result', 'aria-label': `Test ${result.name}` },
      h('h4', {}, result.name, ' ', badge(result.passed ? 'passed' : 'failed'),
        result.model === 'live' ? [' ', h('span', { class: 'chip chip-soft' }, 'live model')] : null),
      result.error ? h('p', { class: 'muted' }, result.error) : null,
      failing.length ? h('ul', { class: 'step-failures' }, ...failing.flatMap((step) => step.failures.map((f) => h('li', {},
        h('strong', {}, `${step.step}`), ' · ', h('code', {}, `line ${f.line ?? '?'} · ${f.field}`), ' — ', f.message,
        f.expected != null ? h('div', { class: 'expected' }, h('span', { class: 'muted' }, 'expected: '), h('code', {}, f.expected)) : null,
        f.actual != null ? h('div', { class: 'actual' }, h('span', { class: 'muted' }, 'actual: '), h('code', {}, f.actual)) : null,
      )))) : h('p', { class: 'muted' }, `${result.steps.length} step(s) passed.`),
    ));
  }
  box.replaceChildren(...parts);
}

async function loadRuns() {
  const [tests, runs] = await Promise.all([get(`${agentPath()}/tests`), get(`${agentPath()}/test-runs`)]);
  state.tests = tests;
  state.runs = runs;
  renderRuns();
  clearTimeout(state.poll);
  if (runs.some(unfinished)) state.poll = setTimeout(() => loadRuns().catch((err) => showError(err, 'Could not load the test runs')), 1000);
}

async function runTests(version, button) {
  button.disabled = true;
  clearNotices();
  try {
    const res = await api('POST', `${agentPath()}/versions/${version}/test-runs`);
    state.shown = res.data.id;
    toast(`Running ${res.data.tests.length} test(s) against version ${version}.`);
    await loadRuns();
  } catch (err) {
    button.disabled = false;
    showError(err, 'Could not run the tests');
  }
}

/** Who made a change and their note, from an audit event (or a dash when none is known). */
function who(event) {
  if (!event) return h('span', { class: 'muted' }, '—');
  return [
    event.actor ? h('span', { class: 'actor' }, event.actor) : h('span', { class: 'muted' }, 'system'),
    event.note ? h('div', { class: 'cell-sub change-note' }, event.note) : null,
  ];
}

function describe(event) {
  const d = event.data || {};
  switch (event.type) {
    case 'agent.created': return 'created the agent';
    case 'agent.version_created':
      return d.change === 'rollback' ? `v${d.version}: rolled back to v${d.rolled_back_to}` : `v${d.version}: ${d.change}`;
    case 'agent.deleted': return 'deleted the agent';
    case 'agent.test_changed': return `test ${d.name}: ${d.change}`;
    case 'routes.changed': return d.purpose ? `route ${d.purpose}: ${d.change}` : `routes: ${d.change}`;
    default: {
      const bits = ['version', 'canary_percent', 'arm', 'reason'].filter((k) => d[k] != null).map((k) => `${k} ${d[k]}`);
      return bits.join(', ');
    }
  }
}

function renderActivity() {
  const tbody = $('#activity-table tbody');
  $('#activity-count').textContent = state.audit.length;
  if (!state.audit.length) return placeholderRow(tbody, 4, 'No recorded changes.');
  tbody.replaceChildren(...state.audit.map((e) => h('tr', {},
    h('td', { class: 'nowrap' }, h('time', { datetime: e.at, title: fmtDate(e.at) }, timeAgo(e.at).textContent)),
    h('td', {}, e.actor ? h('span', { class: 'actor' }, e.actor) : h('span', { class: 'muted' }, 'system')),
    h('td', {}, h('code', {}, e.type), h('div', { class: 'cell-sub' }, describe(e))),
    h('td', {}, e.note || h('span', { class: 'muted' }, '—')),
  )));
}

async function loadAudit() {
  try {
    state.audit = await getAll('/audit', { agent_id: state.agentId });
  } catch (err) {
    state.audit = [];
    placeholderRow($('#activity-table tbody'), 4, 'Could not load the audit trail.', 'error');
    return;
  }
  state.byVersion = new Map();
  for (const e of state.audit) { // newest first: the newest record of a version number wins
    if (e.type === 'agent.version_created' && !state.byVersion.has(e.data.version)) state.byVersion.set(e.data.version, e);
  }
  renderActivity();
}

async function load() {
  state.versions = await get(`/agents/config/${encodeURIComponent(state.agentId)}/versions`);
  await loadAudit();
  const n = state.versions.length;
  state.to = state.versions[n - 1].version;
  state.from = state.versions[Math.max(0, n - 2)].version;
  const current = state.versions[n - 1];
  $('#history-title').textContent = `${current.name} · history`;
  $('#crumb-agent').textContent = state.agentId;
  setTitle(`${current.name} history`);
  renderTable();
  renderDiffPanel();
  await loadRuns();
}

async function rollback(version, button) {
  const current = state.versions.at(-1).version;
  button.disabled = true;
  clearNotices();
  try {
    const res = await api('POST', `/agents/config/${encodeURIComponent(state.agentId)}/rollback/${version}`, { ifMatch: current });
    await load();
    toast(`Rolled back: version ${res.data.version} restores version ${version}.`);
    notice('success', `Version ${res.data.version} is now current, with the content of version ${version}.`, { title: 'Rolled back.' });
  } catch (err) {
    button.disabled = false;
    if (err.status === 412) showConflict(err);
    else showError(err, 'Could not roll back');
  }
}

export async function init(data) {
  state.agentId = data.agentId;
  const href = `/agents/${encodeURIComponent(state.agentId)}`;
  $('#crumb-agent').href = href;
  $('#edit-link').href = href;
  try {
    await load();
  } catch (err) {
    placeholderRow($('#versions-table tbody'), 10, err.status === 404 ? 'This agent does not exist (any more).' : 'Could not load the history.', 'error');
    showError(err, 'Could not load the history');
  }
}
