// The agent page's Publishing card: what routing hands out (the published version), the
// drafts written after it, and a running (or the last) canary with each arm's figures
// from GET /agents/config/{id}/rollout, with publish, canary, promote and abort. Every
// write sends the release revision it was shown as If-Match: a change someone else made
// meanwhile is refused (412) and the card reloads instead of overwriting it.
import { api } from './api.js';
import { $, badge, confirmDialog, h, notice, setBusy, showError, timeAgo, toast } from './ui.js';

const pct = (x) => (x == null ? '—' : `${Math.round(x * 100)}%`);
const ms = (x) => (x == null ? '—' : `${Math.round(x)} ms`);
const rate = (arm, count) => (arm.finished ? count / arm.finished : null);

function armRows(stable, canary) {
  const rows = [
    ['Version', (a) => `v${a.version}`],
    ['Sessions (finished)', (a) => `${a.sessions} (${a.finished})`],
    ['Completed', (a) => pct(rate(a, a.completed))],
    ['Required fields complete', (a) => pct(rate(a, a.required_complete))],
    ['Tool errors', (a) => pct(rate(a, a.tool_errors))],
    ['Handed off', (a) => pct(rate(a, a.handoffs))],
    ['LLM failures', (a) => `${a.llm_failures} (${pct(rate(a, a.llm_failures))})`],
    ['Turn latency p50 / p95', (a) => `${ms(a.turn_p50_ms)} / ${ms(a.turn_p95_ms)}`],
  ];
  return h('table', { class: 'table rollout-arms', id: 'rollout-arms' },
    h('thead', {}, h('tr', {}, h('th', {}, ''), h('th', {}, 'Stable'), h('th', {}, 'Canary'))),
    h('tbody', {}, rows.map(([label, f]) => h('tr', { dataset: { row: label } },
      h('th', { scope: 'row' }, label), h('td', { class: 'arm-stable' }, f(stable)), h('td', { class: 'arm-canary' }, f(canary))))));
}

function verdictLine(report) {
  const v = report.verdict;
  if (!v) return null;
  if (!v.ready) return h('p', { class: 'hint', id: 'rollout-verdict' }, 'The rollout guard judges the canary once both arms have enough finished sessions.');
  if (v.worse) return h('p', { class: 'hint hint-warn', id: 'rollout-verdict' }, `Worse than stable: ${v.reason}`);
  return h('p', { class: 'hint', id: 'rollout-verdict' }, 'Not worse than stable so far (at the guard\'s margin and confidence).');
}

export async function renderRelease(container, agentId, { onChange } = {}) {
  const path = `/agents/config/${encodeURIComponent(agentId)}`;
  let report;
  let rev;
  try {
    const res = await api('GET', `${path}/rollout`);
    report = res.data;
    rev = res.version;
  } catch (err) {
    container.replaceChildren(h('p', { class: 'hint hint-warn' }, `Could not load the release: ${err.detail}`));
    return;
  }
  const rel = report.release;
  const rollout = rel.rollout;
  const running = rollout && rollout.status === 'running';
  const reload = () => renderRelease(container, agentId, { onChange });

  async function act(button, method, url, body, done) {
    setBusy(button, true);
    try {
      await api(method, url, { body, ifMatch: rev });
      toast(done);
      onChange?.();
    } catch (err) {
      if (err.status === 412) notice('warn', 'Someone changed what is published meanwhile; the card shows the current state now.', { title: 'Not changed:' });
      else showError(err, 'Could not change what is published');
    }
    await reload();
  }

  const publishButton = (version) => h('button', {
    type: 'button', class: 'btn btn-small', dataset: { publish: version },
    onclick: (e) => act(e.currentTarget, 'POST', `${path}/publish`, { version }, `Version ${version} is published.`),
  }, 'Publish');
  const canaryButton = (version) => h('button', {
    type: 'button', class: 'btn btn-small', dataset: { canary: version },
    onclick: (e) => {
      const percent = Number($('#canary-percent', container)?.value || 10);
      act(e.currentTarget, 'POST', `${path}/publish`, { version, canary_percent: percent }, `Version ${version} runs as a ${percent}% canary.`);
    },
  }, 'Start canary');

  const parts = [
    h('p', { id: 'release-published' }, 'Routing hands out ', h('strong', {}, `version ${rel.published_version}`),
      ` (newest: version ${rel.current_version}). `, h('span', { class: 'muted' }, `Release revision ${rel.rev}.`)),
  ];
  if (report.drafts.length) {
    parts.push(h('div', { id: 'release-drafts' },
      h('p', {}, `Drafts: ${report.drafts.map((v) => `v${v}`).join(', ')}.`),
      running ? h('p', { class: 'hint' }, 'A canary is running: promote or abort it before publishing another version.') : h('div', { class: 'field field-inline' },
        h('label', { for: 'canary-percent' }, 'Canary share (%)'),
        h('input', { id: 'canary-percent', type: 'number', min: 1, max: 99, value: 10, class: 'input-small' })),
      h('ul', { class: 'draft-list' }, report.drafts.map((v) => h('li', { dataset: { draft: v } }, `Version ${v} `,
        running ? null : publishButton(v), ' ', running ? null : canaryButton(v))))));
  } else {
    parts.push(h('p', { class: 'muted', id: 'release-drafts' }, 'No drafts: every version is published as it is saved (or set “Auto-publish” off to keep new versions as drafts).'));
  }
  if (rollout) {
    const status = { running: badge('Canary running', 'info'), promoted: badge('Promoted', 'success'), aborted: badge('Aborted', 'danger') }[rollout.status];
    parts.push(h('div', { id: 'rollout', dataset: { status: rollout.status } },
      h('h3', {}, `Canary: version ${rollout.version} for ${rollout.percent}% of callers `, status),
      h('p', { class: 'muted', id: 'rollout-times' }, `Stable: version ${rollout.stable_version}. Started `, timeAgo(rollout.started_at),
        rollout.started_by ? ` by ${rollout.started_by}` : '',
        ...(rollout.ended_at ? ['; ended ', timeAgo(rollout.ended_at), rollout.ended_by ? ` by ${rollout.ended_by}` : ''] : []), '.'),
      rollout.reason ? h('p', { class: 'hint hint-warn', id: 'rollout-reason' }, rollout.reason) : null,
      report.stable && report.canary ? armRows(report.stable, report.canary) : null,
      running ? verdictLine(report) : null,
      running ? h('div', { class: 'actions' },
        h('button', {
          type: 'button', class: 'btn btn-primary', id: 'rollout-promote',
          onclick: (e) => act(e.currentTarget, 'POST', `${path}/rollout/promote`, undefined, `Version ${rollout.version} is published for everyone.`),
        }, 'Promote'),
        h('button', {
          type: 'button', class: 'btn btn-ghost-danger', id: 'rollout-abort',
          onclick: async (e) => {
            const button = e.currentTarget;
            const ok = await confirmDialog({
              title: 'Abort the canary?', danger: true, confirm: 'Abort canary',
              message: `Every new caller gets version ${rollout.stable_version} again. Calls already on the canary finish as they are.`,
            });
            if (ok) act(button, 'POST', `${path}/rollout/abort`, { reason: 'aborted from the console' }, 'Canary aborted.');
          },
        }, 'Abort')) : null));
  }
  container.replaceChildren(...parts);
}
