// Talk: call an agent from the browser. POST /api/v1/token for a room token, join the
// room with livekit-client (served by the app: app/assets/browser.py), publish the mic,
// play the agent's audio and show live transcriptions.
import { api, get, getAll } from '../api.js';
import { clearFieldErrors, showFieldErrors } from '../forms.js';
import { $, clearNotices, h, notice } from '../ui.js';

const LIVEKIT_MODULE = '/console/vendor/livekit-client/livekit-client.esm.mjs';
const TOKEN_KEY_STORAGE = 'voice-platform.token-key';
const AGENT_JOIN_TIMEOUT_MS = 20000;
const CONNECT_TIMEOUT_MS = 15000;

const state = {
  versions: [], release: null,
  routes: [], agents: [], config: null, room: null, lk: null, segments: new Map(), agentTimer: null, data: {},
};

// ------------------------------------------------------------------ status

function setStatus(text, tone = 'neutral') {
  const el = $('#call-status');
  el.textContent = text;
  el.className = `badge badge-${tone}`;
  $('#call-stage').dataset.state = tone;
}

function caption(text) {
  $('#call-caption').textContent = text;
}

function callAlert(kind, message, title) {
  return notice(kind, message, { title, container: $('#call-alert') });
}

function cannotReachLiveKit(detail) {
  setStatus('Cannot reach LiveKit', 'danger');
  caption('The call could not start.');
  callAlert('error', detail, 'Cannot reach LiveKit.');
}

function setRunning(running) {
  $('#t-start').disabled = running || state.data.livekitClient !== 'ready' || !target();
  $('#t-stop').disabled = !running;
  for (const el of $('#talk-form').querySelectorAll('select, input')) el.disabled = running;
}

// ------------------------------------------------------------------ targets & variables

function targetOptions() {
  const select = $('#t-target');
  const byId = new Map(state.agents.map((a) => [a.agent_id, a]));
  const routes = [...state.routes].sort((a, b) => (b.is_default - a.is_default) || a.purpose.localeCompare(b.purpose));
  select.replaceChildren(
    h('optgroup', { label: 'By purpose (routing table)' }, routes.map((r) => {
      const agent = byId.get(r.agent_id);
      return h('option', { value: `purpose:${r.purpose}`, disabled: agent && !agent.enabled },
        `${r.purpose} → ${agent ? agent.name : r.agent_id}${r.is_default ? ' · default route' : ''}${agent && !agent.enabled ? ' — disabled' : ''}`);
    })),
    h('optgroup', { label: 'Agent directly' }, state.agents.map((a) => h('option', { value: `agent:${a.agent_id}`, disabled: !a.enabled },
      `${a.name} (${a.agent_id})${a.enabled ? '' : ' — disabled'}`))),
  );
  const params = new URLSearchParams(location.search);
  const wanted = params.get('agent') ? `agent:${params.get('agent')}` : params.get('purpose') ? `purpose:${params.get('purpose')}` : null;
  const fallback = routes.find((r) => r.is_default) || routes[0];
  const options = [...select.options].filter((o) => !o.disabled).map((o) => o.value);
  select.value = options.includes(wanted) ? wanted : fallback && options.includes(`purpose:${fallback.purpose}`) ? `purpose:${fallback.purpose}` : options[0] || '';
}

function target() {
  const [kind, ...rest] = $('#t-target').value.split(':');
  const name = rest.join(':');
  if (!name) return null;
  const agentId = kind === 'purpose' ? state.routes.find((r) => r.purpose === name)?.agent_id : name;
  return { kind, name, agentId };
}

let variablesRequest = 0;

// The version picker: empty = what routing hands out (the published version, or a canary
// arm); a number = exactly that version (a draft, say), minted by the admin API's
// version token endpoint (POST /agents/config/{id}/versions/{v}/token).
function fillVersions() {
  const select = $('#t-version');
  const rel = state.release;
  const canary = rel?.rollout?.status === 'running' ? rel.rollout : null;
  const label = (c) => {
    const tags = [];
    if (c.version === rel?.published_version) tags.push('published');
    if (canary && c.version === canary.version) tags.push(`canary ${canary.percent}%`);
    if (rel && c.version > rel.published_version && !(canary && c.version === canary.version)) tags.push('draft');
    return `v${c.version}${tags.length ? ` · ${tags.join(', ')}` : ''}`;
  };
  select.replaceChildren(
    h('option', { value: '' }, `As routed (v${rel?.published_version ?? '?'}${canary ? `, or v${canary.version} for ${canary.percent}% of callers` : ''})`),
    ...[...state.versions].reverse().map((c) => h('option', { value: String(c.version) }, label(c))));
  $('#t-version-field').hidden = false;
}

function selectedVersion() {
  const v = $('#t-version').value;
  return v ? Number(v) : null;
}

function showVariablesFor(config) {
  const body = $('#t-variables-body');
  state.config = config;
  const vars = Object.entries(config.prompt_config.variables || {});
  if (!vars.length) {
    body.replaceChildren(h('p', { class: 'hint' }, `${state.config.name} declares no variables.`));
    return;
  }
  body.replaceChildren(...vars.map(([name, spec]) => {
    const id = `t-var-${name}`;
    const required = spec.required && spec.default == null;
    return h('div', { class: 'field', dataset: { field: `variables.${name}` } },
      h('label', { for: id }, name, required ? h('span', { class: 'req', title: 'required' }, '*') : null),
      h('input', { id, name, class: 'talk-var', autocomplete: 'off', required, placeholder: spec.default ?? '', dataset: { name } }),
      spec.description ? h('p', { class: 'hint' }, spec.description, spec.default != null ? ` Default: “${spec.default}”.` : '') : null);
  }));
}

function versionChanged() {
  const v = selectedVersion() ?? state.release?.published_version;
  const config = state.versions.find((c) => c.version === v) || state.versions.at(-1);
  if (config) showVariablesFor(config);
  $('#t-version-hint').textContent = selectedVersion() == null
    ? 'The version a caller gets now.'
    : 'Exactly this version, whatever is published: the token comes from the admin API (a key with the publish role).';
}

async function renderVariables() {
  const t = target();
  const body = $('#t-variables-body');
  const request = ++variablesRequest; // a slower answer for an earlier choice must not win
  state.config = null;
  if (!t) {
    body.replaceChildren(h('p', { class: 'hint' }, 'No agent to talk to yet: create an agent and a route first.'));
    $('#t-version-field').hidden = true;
    return;
  }
  $('#t-target-hint').textContent = t.kind === 'purpose' ? `Routed to ${t.agentId}; the token asks for purpose “${t.name}”.` : 'Skips the routing table.';
  const id = encodeURIComponent(t.agentId);
  let versions;
  let report;
  try {
    [versions, report] = await Promise.all([get(`/agents/config/${id}/versions`), get(`/agents/config/${id}/rollout`)]);
  } catch (err) {
    if (request !== variablesRequest) return;
    body.replaceChildren(h('p', { class: 'hint hint-warn' }, `Could not load ${t.agentId}: ${err.detail}`));
    return;
  }
  if (request !== variablesRequest) return;
  state.versions = versions;
  state.release = report.release;
  fillVersions();
  versionChanged();
}

// ------------------------------------------------------------------ transcript

function upsertSegment(id, speaker, text, final) {
  const list = $('#live-transcript');
  list.querySelector('.empty')?.remove();
  let li = state.segments.get(id);
  if (!li) {
    li = h('li', { class: `turn turn-${speaker === 'You' ? 'user' : 'assistant'}` },
      h('div', { class: 'turn-meta' }, h('span', { class: 'turn-role' }, speaker)),
      h('div', { class: 'turn-text' }));
    state.segments.set(id, li);
    list.append(li);
  }
  li.querySelector('.turn-text').textContent = text;
  li.classList.toggle('interim', !final);
  list.scrollTop = list.scrollHeight;
}

function speakerOf(identity) {
  return identity === state.room?.localParticipant?.identity ? 'You' : 'Agent';
}

// ------------------------------------------------------------------ call

function isAgent(p) {
  return p.isAgent || p.kind === state.lk.ParticipantKind?.AGENT;
}

function agentJoined(p) {
  clearTimeout(state.agentTimer);
  setStatus('Connected', 'success');
  caption(`${state.config?.name || 'The agent'} joined. Speak when you are ready.`);
  const s = p.attributes?.['lk.agent.state'];
  if (s) agentState(s);
}

function agentState(s) {
  $('#call-stage').dataset.agent = s;
  const text = { listening: 'Listening…', thinking: 'Thinking…', speaking: 'Speaking…', initializing: 'Getting ready…' }[s];
  if (text) caption(`${state.config?.name || 'Agent'}: ${text}`);
}

function wireRoom(room, lk) {
  const { RoomEvent, Track } = lk;
  room.on(RoomEvent.TrackSubscribed, (track) => {
    if (track.kind === Track.Kind.Audio) $('#audio-sink').append(track.attach());
  });
  room.on(RoomEvent.TrackUnsubscribed, (track) => track.detach().forEach((el) => el.remove()));
  room.on(RoomEvent.ParticipantConnected, (p) => { if (isAgent(p)) agentJoined(p); });
  room.on(RoomEvent.ParticipantDisconnected, (p) => {
    if (isAgent(p)) { setStatus('Agent left', 'warn'); caption('The agent left the call.'); }
  });
  room.on(RoomEvent.ParticipantAttributesChanged, (changed, p) => {
    if (p && isAgent(p) && changed['lk.agent.state']) agentState(changed['lk.agent.state']);
  });
  room.on(RoomEvent.ActiveSpeakersChanged, (speakers) => {
    $('#call-stage').dataset.speaking = speakers.some((p) => isAgent(p)) ? 'agent' : speakers.length ? 'user' : '';
  });
  room.on(RoomEvent.ConnectionStateChanged, (s) => {
    if (s === 'reconnecting') setStatus('Reconnecting…', 'warn');
  });
  room.on(RoomEvent.Disconnected, () => endCall('The call ended.'));
  // Older agents publish transcriptions as events, current ones as text streams.
  room.on(RoomEvent.TranscriptionReceived, (segments, participant) => {
    for (const seg of segments) upsertSegment(seg.id, speakerOf(participant?.identity), seg.text, seg.final);
  });
  room.registerTextStreamHandler?.('lk.transcription', async (reader, info) => {
    const attrs = reader.info.attributes || {};
    const id = attrs['lk.segment_id'] || reader.info.id;
    const speaker = speakerOf(info.identity);
    let text = '';
    for await (const chunk of reader) {
      text += chunk;
      upsertSegment(id, speaker, text, false);
    }
    upsertSegment(id, speaker, text, true);
  });
}

async function loadLiveKit() {
  if (!state.lk) state.lk = await import(LIVEKIT_MODULE);
  return state.lk;
}

function withTimeout(promise, ms, message) {
  let timer;
  return Promise.race([promise, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(message)), ms); })])
    .finally(() => clearTimeout(timer));
}

async function start(event) {
  event.preventDefault();
  const form = $('#talk-form');
  const summary = $('#talk-errors');
  clearFieldErrors(form, summary);
  clearNotices($('#call-alert'));
  const t = target();
  if (!t) return;
  const variables = {};
  const missing = [];
  for (const input of form.querySelectorAll('.talk-var')) {
    const v = input.value.trim();
    if (v) variables[input.dataset.name] = v;
    else if (input.required) missing.push({ key: `variables.${input.dataset.name}`, message: 'Required: this agent has no default for it.' });
  }
  if (missing.length) return showFieldErrors(form, summary, missing, { title: 'Fill in the required variables:' });
  const body = t.kind === 'purpose' ? { purpose: t.name } : { agent_id: t.name };
  body.variables = variables;
  const userId = $('#t-user').value.trim();
  if (userId) body.user_id = userId;

  setRunning(true);
  setStatus('Requesting token…', 'info');
  caption('Asking the server for a room token…');
  $('#live-transcript').replaceChildren(h('li', { class: 'empty' }, 'Transcriptions appear here while you talk.'));
  state.segments.clear();

  let token;
  const tokenKey = $('#t-token-key').value.trim();
  if (tokenKey) sessionStorage.setItem(TOKEN_KEY_STORAGE, tokenKey);
  const version = selectedVersion();
  try {
    if (version != null) {  // a pinned version: the admin API's version token (publish role)
      const { variables: vars, user_id: uid } = body;
      const path = `/agents/config/${encodeURIComponent(t.agentId)}/versions/${version}/token`;
      token = (await api('POST', path, { body: { variables: vars, ...(uid ? { user_id: uid } : {}) } })).data;
    } else {
      token = (await api('POST', '/token', { body, auth: state.data.tokenKey === 'required' ? tokenKey || 'admin' : 'admin' })).data;
    }
  } catch (err) {
    setRunning(false);
    if (err.status === 503) return cannotReachLiveKit(`${err.detail}. Set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET on the server, then restart it.`);
    setStatus('Not connected', 'neutral');
    caption('Press Start to begin a call.');
    if (err.status === 422 && err.fieldErrors.length) return showFieldErrors(form, summary, err.fieldErrors, { title: 'The server refused this call:' });
    if (err.status === 401) return callAlert('error', 'The token endpoint needs its own key (TOKEN_API_KEY): enter it above.', 'Not authorised.');
    if (err.status === 429) return callAlert('warn', 'Too many calls were started from here in the last minute. Wait a moment and try again.', 'Slow down.');
    return callAlert('error', err.detail, 'Could not start the call:');
  }

  let lk;
  try {
    lk = await loadLiveKit();
  } catch (err) {
    setRunning(false);
    setStatus('Not connected', 'neutral');
    return callAlert('error', 'The LiveKit browser client could not be loaded. Run `npm ci --prefix app/console` on the server and restart it.', 'Console assets not built.');
  }

  setStatus('Connecting…', 'info');
  caption(`Joining room ${token.room_name}…`);
  const room = new lk.Room({ adaptiveStream: true, dynacast: true });
  state.room = room;
  wireRoom(room, lk);
  try {
    await withTimeout(room.connect(token.server_url, token.participant_token), CONNECT_TIMEOUT_MS, `no answer within ${CONNECT_TIMEOUT_MS / 1000} s`);
  } catch (err) {
    state.room = null;
    room.removeAllListeners();
    room.disconnect().catch(() => {});
    setRunning(false);
    return cannotReachLiveKit(`Could not connect to ${token.server_url}: ${err?.message || err}. Check that LIVEKIT_URL points at a running LiveKit server reachable from this browser.`);
  }
  room.startAudio().catch(() => {});
  setStatus('Waiting for the agent…', 'info');
  caption('Connected. Waiting for the agent to join…');
  const agent = [...room.remoteParticipants.values()].find(isAgent);
  if (agent) agentJoined(agent);
  else {
    state.agentTimer = setTimeout(() => {
      if (state.room !== room) return;
      setStatus('No agent', 'warn');
      caption('Nobody answered.');
      callAlert('warn', `No agent joined within ${AGENT_JOIN_TIMEOUT_MS / 1000} s. The worker may not be running or registered with LiveKit; check /readyz on the server.`, 'The agent did not join.');
    }, AGENT_JOIN_TIMEOUT_MS);
  }
  try {
    await room.localParticipant.setMicrophoneEnabled(true);
  } catch (err) {
    const why = window.isSecureContext
      ? `${err?.message || err}. Allow microphone access in the browser to talk`
      : 'Browsers only give the microphone to pages served over https:// or from localhost';
    callAlert('warn', `${why}; you can still hear the agent.`, 'Microphone unavailable.');
  }
}

function endCall(message) {
  clearTimeout(state.agentTimer);
  const room = state.room;
  state.room = null;
  if (room) {
    room.removeAllListeners();
    room.disconnect().catch(() => {});
  }
  $('#audio-sink').replaceChildren();
  $('#call-stage').dataset.speaking = '';
  $('#call-stage').dataset.agent = '';
  setRunning(false);
  setStatus('Not connected', 'neutral');
  caption(message);
}

async function showWorkerState() {
  const el = $('#worker-state');
  try {
    const res = await fetch('/readyz');
    const r = await res.json();
    const ok = r.worker === 'registered';
    el.replaceChildren(h('span', { class: `dot dot-${ok ? 'ok' : r.worker === 'disabled' ? 'off' : 'warn'}`, 'aria-hidden': 'true' }),
      `Worker: ${r.worker}`);
    el.title = r.detail || '';
  } catch {
    el.textContent = '';
  }
}

export async function init(data) {
  state.data = data;
  setStatus('Not connected');
  $('#live-transcript').replaceChildren(h('li', { class: 'empty' }, 'Transcriptions appear here while you talk.'));
  if (data.tokenKey === 'required') {
    $('#t-token-key-field').hidden = false;
    $('#t-token-key').value = sessionStorage.getItem(TOKEN_KEY_STORAGE) || '';
  }
  if (data.livekitClient === 'fetching') {
    notice('info', 'The server is fetching the LiveKit browser client (npm package livekit-client) from the npm registry. Reload this page in a moment.',
      { title: 'Getting the LiveKit client.' });
  } else if (data.livekitClient !== 'ready') {
    notice('warn', h('span', {}, 'Calls cannot start: the LiveKit browser client (npm package livekit-client) is not available on this server. ',
      h('code', {}, data.livekitClientDetail || 'unknown reason'),
      '. The server fetches it from the npm registry (or NPM_REGISTRY) and keeps it in ASSET_CACHE_DIR; once it can reach the registry, reload this page.'),
    { title: 'LiveKit client missing.' });
  }
  $('#talk-form').addEventListener('submit', start);
  $('#t-stop').addEventListener('click', () => endCall('You left the call.'));
  $('#t-target').addEventListener('change', renderVariables);
  $('#t-version').addEventListener('change', versionChanged);
  window.addEventListener('pagehide', () => state.room?.disconnect());
  showWorkerState();
  try {
    [state.routes, state.agents] = await Promise.all([get('/routes'), getAll('/agents/config')]);
  } catch (err) {
    if (err.status !== 401) notice('error', err.detail, { title: 'Could not load agents and routes:' });
    return;
  }
  targetOptions();
  await renderVariables();
  setRunning(false);
}
