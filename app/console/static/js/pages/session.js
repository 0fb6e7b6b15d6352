// One session: transcript (with handoffs in place), details, and the collected data
// checked against the schema of the agent version that ran it.
import { api, get } from '../api.js';
import { renderTurnTimeline } from '../latency.js';
import { compareCollected } from '../schema-check.js';
import { $, badge, duration, fill, fmtDate, fmtTime, h, notice, setTitle, showError, usd } from '../ui.js';

const ROLE_LABEL = { user: 'Caller', assistant: 'Agent', system: 'System', tool: 'Tool' };

function link(href, text) {
  return h('a', { href }, text);
}

function renderFacts(s) {
  const agentHref = `/agents/${encodeURIComponent(s.agent_id)}`;
  const facts = [
    ['Status', [badge(s.status), s.degraded ? [' ', badge('degraded', 'warn')] : null]],
    ['Agent', link(agentHref, s.agent_id)],
    ['Config version', s.config_version ? link(`${agentHref}/history`, `v${s.config_version}`) : '—'],
    ['User', s.user_id || '—'],
    ['Room', h('code', { class: 'mono-id' }, s.room)],
    ['Started', fmtDate(s.started_at)],
    ['Ended', s.ended_at ? fmtDate(s.ended_at) : 'still active'],
    ['Duration', s.ended_at ? duration(s.started_at, s.ended_at) : '—'],
    ['End reason', s.end_reason || '—'],
    ['Routed because', s.route_reason || '—'],
  ];
  if (s.degraded) facts.push(['Degraded', s.degraded]);
  if (s.error) facts.push(['Error', h('span', { class: 'text-danger' }, s.error)]);
  $('#facts').replaceChildren(...facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function renderTranscript(s) {
  const list = $('#transcript');
  $('#turns-count').textContent = s.turns.length;
  const events = [
    ...s.turns.map((t) => ({ at: t.at, kind: 'turn', t })),
    ...s.handoffs.map((x) => ({ at: x.at, kind: 'handoff', x })),
  ].sort((a, b) => new Date(a.at) - new Date(b.at) || (a.kind === 'turn' ? a.t.seq : 0) - (b.kind === 'turn' ? b.t.seq : 0));
  if (!events.length) {
    list.replaceChildren(h('li', { class: 'empty' }, 'No turns were recorded for this session.'));
    return;
  }
  const multiAgent = new Set(s.turns.map((t) => t.agent_id).filter(Boolean)).size > 1;
  list.replaceChildren(...events.map((e) => {
    if (e.kind === 'handoff') {
      return h('li', { class: 'turn-divider' }, h('span', {}, `Handed off from ${e.x.from_agent} to ${e.x.to_agent}`, e.x.reason ? ` — ${e.x.reason}` : '', ' · ', fmtTime(e.at)));
    }
    const t = e.t;
    return h('li', { class: `turn turn-${t.role}` },
      h('div', { class: 'turn-meta' },
        h('span', { class: 'turn-role' }, ROLE_LABEL[t.role] || t.role),
        multiAgent && t.agent_id && t.role === 'assistant' ? h('span', { class: 'chip chip-soft' }, t.agent_id) : null,
        h('time', { datetime: t.at }, fmtTime(t.at))),
      h('div', { class: 'turn-text' }, t.text));
  }));
}

function valueCell(v) {
  if (v === undefined) return h('span', { class: 'muted' }, '—');
  if (Array.isArray(v)) return h('div', { class: 'chips' }, v.map((x) => h('span', { class: 'chip' }, typeof x === 'string' ? x : JSON.stringify(x))));
  if (v && typeof v === 'object') return h('code', { class: 'mono-id' }, JSON.stringify(v));
  return String(v);
}

const STATE_BADGE = {
  ok: () => badge('valid', 'success'),
  missing: () => badge('missing', 'danger'),
  empty: () => badge('not collected', 'neutral'),
  invalid: () => badge('invalid', 'danger'),
  extra: () => badge('not in schema', 'warn'),
};

async function renderCollected(s) {
  const box = $('#collected');
  let schema = null;
  let note = null;
  try {
    const query = s.config_version ? { version: s.config_version } : {};
    schema = (await get(`/agents/config/${encodeURIComponent(s.agent_id)}`, { query })).schema_config;
  } catch (err) {
    if (err.status === 401) return;
    note = err.status === 404
      ? `The configuration of ${s.agent_id}${s.config_version ? ` v${s.config_version}` : ''} no longer exists, so the data is shown without its schema.`
      : `Could not load the agent's schema: ${err.detail}`;
  }
  const rows = compareCollected(s.collected, schema || {});
  if (!rows.length) {
    box.replaceChildren(h('p', { class: 'empty' }, schema ? 'The schema declares no fields and nothing was collected.' : 'Nothing was collected.'));
    return;
  }
  if (schema) {
    const required = rows.filter((r) => r.required);
    const done = required.filter((r) => r.state === 'ok').length;
    $('#collected-summary').replaceChildren(badge(`${done} of ${required.length} required`, done === required.length ? 'success' : 'warn'));
  }
  fill(box,
    note ? h('p', { class: 'hint hint-warn' }, note) : null,
    h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact', 'aria-label': 'Collected data' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Field'), h('th', { scope: 'col' }, 'Value'), h('th', { scope: 'col' }, 'Check'))),
      h('tbody', {}, rows.map((r) => h('tr', { class: `collected-${r.state}` },
        h('td', {}, h('code', { class: 'mono-id' }, r.name), r.required ? h('span', { class: 'req', title: 'required' }, '*') : null,
          r.prop.description ? h('div', { class: 'cell-sub' }, r.prop.description) : null),
        h('td', {}, valueCell(r.value)),
        h('td', {}, schema || r.state !== 'extra' ? STATE_BADGE[r.state]() : null,
          r.problems.length && r.state !== 'extra' ? h('div', { class: 'cell-sub text-danger' }, r.problems.join('; ')) : null),
      ))),
    )),
  );
}

function renderHandoffs(s) {
  const list = $('#handoff-list');
  if (!s.handoffs.length) {
    list.replaceChildren(h('li', { class: 'empty' }, 'No handoffs: one agent handled the whole call.'));
    return;
  }
  list.replaceChildren(...s.handoffs.map((x) => h('li', {},
    h('div', {}, link(`/agents/${encodeURIComponent(x.from_agent)}`, x.from_agent), ' → ', link(`/agents/${encodeURIComponent(x.to_agent)}`, x.to_agent)),
    h('div', { class: 'cell-sub' }, fmtDate(x.at), x.reason ? ` · ${x.reason}` : ''))));
}

const KIND_LABEL = { llm: 'LLM', stt: 'Speech to text', tts: 'Text to speech' };
const EVENT_LABEL = {
  provider_unavailable: 'Provider unavailable',
  provider_recovered: 'Provider recovered',
  reply_capped: 'Reply cut at its cap',
  repetition_stopped: 'Repeating reply stopped',
  budget_warning: 'Told to wrap up',
  budget_exhausted: 'Limit reached',
};

function renderUsage(s) {
  const u = s.usage || {};
  const n = (x) => Number(x || 0).toLocaleString();
  const unpriced = u.unpriced_models || [];
  $('#usage-cost').replaceChildren(badge(usd(u.cost_usd), unpriced.length ? 'warn' : 'neutral', {
    title: unpriced.length ? `Leaves out ${unpriced.join(', ')}: no price` : 'At the price table\'s rates when the call ran',
  }));
  $('#usage').replaceChildren(...[
    ['LLM tokens', `${n((u.llm_input_tokens || 0) + (u.llm_output_tokens || 0))} (${n(u.llm_input_tokens)} in, of which ${n(u.llm_cached_tokens)} cached; ${n(u.llm_output_tokens)} out)`],
    ['STT audio', `${Number(u.stt_audio_s || 0).toFixed(1)} s`],
    ['TTS', `${n(u.tts_characters)} characters, ${Number(u.tts_audio_s || 0).toFixed(1)} s`],
    ['Cost', [usd(u.cost_usd), unpriced.length ? h('div', { class: 'hint hint-warn' }, `No price for ${unpriced.join(', ')}: not included`) : null]],
  ].flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  const models = u.models || [];
  $('#usage-models').replaceChildren(models.length
    ? h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact', 'aria-label': 'Usage by model' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Model'), h('th', { scope: 'col' }, 'Used'), h('th', { scope: 'col' }, 'Cost'))),
      h('tbody', {}, models.map((m) => h('tr', {},
        h('td', {}, KIND_LABEL[m.kind] || m.kind, h('div', { class: 'cell-sub' }, `${m.model} · ${m.provider}`)),
        h('td', {}, m.kind === 'llm' ? `${n(m.input_tokens)} in (${n(m.cached_tokens)} cached), ${n(m.output_tokens)} out`
          : m.kind === 'stt' ? `${Number(m.audio_s).toFixed(1)} s` : `${n(m.characters)} chars, ${Number(m.audio_s).toFixed(1)} s`),
        h('td', {}, m.cost_usd === null ? badge('no price', 'warn') : usd(m.cost_usd),
          m.price_as_of ? h('div', { class: 'cell-sub' }, `prices of ${m.price_as_of}`) : null))))))
    : h('p', { class: 'empty' }, 'No model usage was recorded.'));
  const served = u.served_by || [];
  $('#served-by').replaceChildren(served.length
    ? h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact', 'aria-label': 'Served by' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Model'), h('th', { scope: 'col' }, 'Provider'), h('th', { scope: 'col' }, 'Turns'))),
      h('tbody', {}, served.map((x) => h('tr', {},
        h('td', {}, KIND_LABEL[x.kind] || x.kind, h('div', { class: 'cell-sub' }, x.model)),
        h('td', {}, h('code', { class: 'mono-id' }, x.provider)),
        h('td', {}, String(x.turns)))))))
    : h('p', { class: 'empty' }, 'No turn was served by a model.'));
}

const ANALYSIS_TONE = { pending: 'neutral', done: 'success', failed: 'danger' };

function renderAnalysis(s) {
  const a = s.analysis;
  const box = $('#analysis');
  if (!a) {
    $('#analysis-status').replaceChildren();
    box.replaceChildren(h('p', { class: 'empty' }, 'No analysis: the agent version that ran this call has no analysis settings.'));
    return;
  }
  $('#analysis-status').replaceChildren(badge(a.status, ANALYSIS_TONE[a.status] || 'neutral'));
  const meta = h('p', { class: 'cell-sub' },
    `${a.request.model} · ${a.attempts} attempt(s)`,
    a.finished_at ? ` · ${fmtDate(a.finished_at)}` : ` · requested ${fmtDate(a.requested_at)}`,
    a.cost_usd !== null && a.cost_usd !== undefined ? ` · ${usd(a.cost_usd)}` : '');
  if (a.status === 'pending') {
    fill(box, h('p', { class: 'hint' }, 'Waiting to run: the analysis runs after the call, off the call\'s path. Reload to see it.'), meta);
    return;
  }
  if (a.status === 'failed') {
    fill(box, h('p', { class: 'text-danger', id: 'analysis-error' }, a.error || 'failed'), meta);
    return;
  }
  const facts = [];
  if (a.summary !== null && a.summary !== undefined) facts.push(['Summary', h('span', { id: 'analysis-summary' }, a.summary)]);
  if (a.success) {
    facts.push(['Success', [badge(a.success.passed ? 'passed' : 'failed', a.success.passed ? 'success' : 'danger'),
      h('div', { class: 'cell-sub', id: 'analysis-reason' }, a.success.reason)]]);
  }
  if (a.extracted) {
    facts.push(['Extracted', h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact', 'aria-label': 'Extracted fields' },
      h('tbody', {}, Object.entries(a.extracted).map(([k, v]) => h('tr', {},
        h('td', {}, h('code', { class: 'mono-id' }, k)), h('td', {}, valueCell(v)))))))]);
  }
  fill(box, h('dl', { class: 'facts' }, facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])), meta);
}

function renderEvents(s) {
  const list = $('#event-list');
  const events = s.events || [];
  if (!events.length) {
    list.replaceChildren(h('li', { class: 'empty' }, 'Nothing to note: no fail-over, cut reply or limit.'));
    return;
  }
  list.replaceChildren(...events.map((e) => h('li', {},
    h('div', {}, EVENT_LABEL[e.kind] || e.kind),
    h('div', { class: 'cell-sub' }, fmtTime(e.at), e.agent_id ? ` · ${e.agent_id}` : '', e.detail ? ` · ${e.detail}` : ''))));
}

export async function init(data) {
  const id = data.sessionId;
  $('#crumb-current').textContent = id;
  let s;
  try {
    s = (await api('GET', `/sessions/${encodeURIComponent(id)}`)).data;
  } catch (err) {
    if (err.status === 404) {
      $('#session-title').textContent = 'Session not found';
      notice('warn', `There is no session “${id}”.`, { actions: [h('a', { class: 'btn btn-small', href: '/sessions' }, 'All sessions')] });
    } else showError(err, 'Could not load the session');
    return;
  }
  setTitle(`Session ${id}`);
  $('#session-title').replaceChildren(`Session ${id}`, ' ', badge(s.status));
  $('#session-sub').textContent = `${s.agent_id}${s.config_version ? ` v${s.config_version}` : ''} · ${fmtDate(s.started_at)}${s.ended_at ? ` · ${duration(s.started_at, s.ended_at)}` : ''}`;
  renderFacts(s);
  renderTranscript(s);
  renderHandoffs(s);
  renderAnalysis(s);
  renderUsage(s);
  renderEvents(s);
  await Promise.all([renderCollected(s), renderTurnTimeline($('#turn-latency'), s.metrics)]);
}
