// Latency charts: a session's per-turn timeline and an agent's percentiles per version
// and per day. Charts are uPlot (npm `uplot`, served from /console/vendor/uplot like the
// LiveKit client); every chart has a table beside it with the same figures, which is
// also what shows when the chart library is unavailable.
import { get } from './api.js';
import { h } from './ui.js';

const VENDOR = '/console/vendor/uplot';
const COLORS = { e2e: '#4f46e5', eou: '#0891b2', llm_ttft: '#d97706', tts_ttfb: '#16a34a', e2e_p95: '#be123c' };
export const STAGES = [
  ['e2e', 'total_ms', 'End to end'],
  ['eou', 'eou_delay_ms', 'End of utterance'],
  ['llm_ttft', 'llm_ttft_ms', 'LLM first token'],
  ['tts_ttfb', 'tts_ttfb_ms', 'TTS first audio'],
];

let uplot = null;
let uplotError = 'the uplot package is not served';
/** uPlot, loaded once; undefined when it cannot load (the tables still show, with why). */
async function loadUPlot() {
  if (uplot === null) {
    uplot = import(`${VENDOR}/uPlot.esm.js`).then((m) => {
      document.head.append(h('link', { rel: 'stylesheet', href: `${VENDOR}/uPlot.min.css` }));
      return m.default;
    }).catch((err) => {
      if (err instanceof Error && !(err instanceof TypeError)) uplotError = `${err.name}: ${err.message}`;
      return undefined;
    });
  }
  return uplot;
}

const ms = (v) => (v === null || v === undefined ? '—' : `${Math.round(v)} ms`);

async function chart(container, { title, x, series, xLabel, time = false }) {
  const UPlot = await loadUPlot();
  if (!UPlot) {
    container.append(h('p', { class: 'muted' }, `Charts are unavailable (${uplotError}); the table below has the figures.`));
    return null;
  }
  const box = h('figure', { class: 'latency-chart', 'data-series': series.length, 'data-points': x.length, 'aria-label': title });
  container.append(box);
  const width = Math.max(320, Math.min(container.clientWidth || 640, 900));
  const pad = time ? 86400 : 1;
  return new UPlot({
    title, width, height: 240,
    // one point (one version, one day) gets a sensible span around it, not uPlot's default
    scales: { x: x.length === 1 ? { time, auto: false, min: x[0] - pad, max: x[0] + pad } : { time } },
    // whole turns and versions on a numeric x axis; dates on a time axis
    axes: [time ? { label: xLabel } : { label: xLabel, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] }, { label: 'ms', size: 60 }],
    series: [{ label: xLabel }, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, points: { show: true }, spanGaps: false }))],
  }, [x, ...series.map((s) => s.values)], box);
}

/** A session's spoken turns: one point per agent turn for each stage. */
export async function renderTurnTimeline(container, metrics) {
  const turns = (metrics || []).filter((m) => STAGES.some(([, field]) => typeof m[field] === 'number'));
  if (!turns.length) {
    container.replaceChildren(h('p', { class: 'empty' }, 'No latency figures: this session had no spoken turns (text sessions record none).'));
    return;
  }
  container.replaceChildren();
  await chart(container, {
    title: 'Latency per agent turn', xLabel: 'Turn', x: turns.map((_, i) => i + 1),
    series: STAGES.map(([key, field, label]) => ({ label, color: COLORS[key], values: turns.map((m) => m[field] ?? null) })),
  });
  container.append(h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact latency-table' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Turn'), ...STAGES.map(([, , label]) => h('th', { scope: 'col' }, label)),
      h('th', { scope: 'col' }, 'Interrupted'))),
    h('tbody', {}, turns.map((m, i) => h('tr', {},
      h('td', {}, String(i + 1)), ...STAGES.map(([, field]) => h('td', { class: 'num' }, ms(m[field]))),
      h('td', {}, m.interrupted ? 'yes' : '')))))));
}

function percentileTable(rows, keyLabel, keyOf) {
  return h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact latency-table' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, keyLabel), h('th', { scope: 'col' }, 'Sessions'), h('th', { scope: 'col' }, 'Turns'),
      ...STAGES.map(([, , label]) => h('th', { scope: 'col' }, `${label} p50 / p95`)))),
    h('tbody', {}, rows.map((r) => h('tr', {},
      h('td', {}, keyOf(r)), h('td', { class: 'num' }, String(r.sessions)), h('td', { class: 'num' }, String(r.turns)),
      ...STAGES.map(([key]) => h('td', { class: 'num nowrap' }, `${ms(r[key].p50_ms)} / ${ms(r[key].p95_ms)}`)))))));
}

function percentileSeries(rows) {
  return [
    { label: 'End to end p50', color: COLORS.e2e, values: rows.map((r) => r.e2e.p50_ms) },
    { label: 'End to end p95', color: COLORS.e2e_p95, values: rows.map((r) => r.e2e.p95_ms) },
    ...STAGES.slice(1).map(([key, , label]) => ({ label: `${label} p50`, color: COLORS[key], values: rows.map((r) => r[key].p50_ms) })),
  ];
}

/** An agent's turn latency over its recent calls: per config version, and per day. */
export async function renderAgentLatency(container, agentId, days = 30) {
  container.replaceChildren(h('p', { class: 'muted' }, 'Loading latency…'));
  let report;
  try {
    report = await get(`/agents/config/${encodeURIComponent(agentId)}/latency`, { query: { days } });
  } catch (err) {
    container.replaceChildren(h('p', { class: 'text-danger' }, `Could not load the latency: ${err.message}`));
    return;
  }
  if (!report.by_version.length) {
    container.replaceChildren(h('p', { class: 'empty' }, `No spoken turns in the last ${days} days.`));
    return;
  }
  container.replaceChildren(h('p', { class: 'muted' },
    `${report.sessions} session(s) in the last ${days} days${report.truncated ? ' (the newest only: more matched)' : ''}.`));
  const versions = h('div', { class: 'latency-block', id: 'latency-by-version' });
  const perDay = h('div', { class: 'latency-block', id: 'latency-by-day' });
  container.append(versions, perDay);
  await chart(versions, { title: 'Per version', xLabel: 'Version', x: report.by_version.map((r) => r.version), series: percentileSeries(report.by_version) });
  versions.append(percentileTable(report.by_version, 'Version', (r) => `v${r.version}`));
  await chart(perDay, {
    title: 'Per day', xLabel: 'Day', time: true,
    x: report.by_day.map((r) => Date.parse(`${r.day}T00:00:00Z`) / 1000), series: percentileSeries(report.by_day),
  });
  perDay.append(percentileTable(report.by_day, 'Day', (r) => r.day));
}
