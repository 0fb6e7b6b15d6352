// Agent create / edit. The form covers every field of an agent configuration; an edit
// is sent as a full replacement (PUT) with If-Match set to the version this page
// loaded, so a concurrent change is refused (412) instead of overwritten.
import { api, ApiError, getAll } from '../api.js';
import { clearFieldErrors, showFieldErrors } from '../forms.js';
import { renderAgentLatency } from '../latency.js';
import { renderRelease } from '../release.js';
import { insertAtCaret, placeholders } from '../template-vars.js';
import {
  $, $$, badge, clearNotices, fill, confirmDialog, flash, h, notice, setBusy, setTitle, showConflict, showError, timeAgo, toast,
} from '../ui.js';

const STARTER_SCHEMA = { type: 'object', properties: {}, required: [] };
const METHODS = ['POST', 'GET', 'PUT', 'PATCH', 'DELETE'];

const state = {
  mode: 'create',
  agentId: null,
  loaded: null, // the AgentConfig as last read or written
  version: null,
  agents: [],
  dirty: false,
  lastPrompt: null, // the prompt textarea a variable chip inserts into
};

const form = () => $('#agent-form');
const summary = () => $('#form-errors');
const val = (sel) => $(sel).value.trim();
const orNull = (s) => (s === '' ? null : s);
const num = (sel) => (val(sel) === '' ? null : Number(val(sel)));

function setDirty(dirty) {
  state.dirty = dirty;
  $('#dirty-state').textContent = dirty ? 'Unsaved changes' : '';
}

function reloadPage() {
  state.dirty = false;
  location.reload();
}

// ------------------------------------------------------------------ variables

let varSeq = 0;

function variableRow(name = '', spec = {}) {
  const n = ++varSeq;
  const nameInput = h('input', { class: 'var-name mono-id', value: name, 'aria-label': `Variable ${n} name`, autocomplete: 'off', spellcheck: 'false', placeholder: 'name' });
  const row = h('tr', { class: 'var-row', dataset: { field: name ? `prompt_config.variables.${name}` : '' } },
    h('td', {}, nameInput),
    h('td', {}, h('input', { class: 'var-description', value: spec.description || '', 'aria-label': `Variable ${n} description`, maxlength: 500, placeholder: 'What it is, for whoever fills it in' })),
    h('td', {}, h('input', { class: 'var-default', value: spec.default ?? '', 'aria-label': `Variable ${n} default`, maxlength: 1024, placeholder: 'none' })),
    h('td', { class: 'center' }, h('input', { type: 'checkbox', class: 'var-required', checked: !!spec.required, 'aria-label': `Variable ${n} required` })),
    h('td', { class: 'right' }, h('button', {
      type: 'button', class: 'btn btn-icon', 'aria-label': `Remove variable ${n}`, title: 'Remove',
      onclick: () => { row.remove(); refreshHints(); setDirty(true); },
    }, '×')),
  );
  nameInput.addEventListener('input', () => { row.dataset.field = nameInput.value ? `prompt_config.variables.${nameInput.value.trim()}` : ''; refreshHints(); });
  return row;
}

function addVariable(name = '', spec = {}) {
  const row = variableRow(name, spec);
  $('#variables-body').append(row);
  refreshEmptyVariables();
  return row;
}

function refreshEmptyVariables() {
  const body = $('#variables-body');
  const empty = body.querySelector('.placeholder-row');
  const rows = body.querySelectorAll('.var-row').length;
  if (!rows && !empty) body.append(h('tr', { class: 'placeholder-row' }, h('td', { colspan: 5 }, 'No variables declared.')));
  if (rows && empty) empty.remove();
}

function readVariables() {
  const out = {};
  for (const row of $$('#variables-body .var-row')) {
    const name = $('.var-name', row).value.trim();
    if (!name) continue;
    const spec = { description: $('.var-description', row).value.trim(), required: $('.var-required', row).checked };
    const def = $('.var-default', row).value;
    spec.default = def === '' ? null : def;
    out[name] = spec;
  }
  return out;
}

/** Chips to insert each declared variable, and warnings about the template text. */
function hintsFor(textarea, box, label) {
  const declared = Object.keys(readVariables());
  const { names, problems } = placeholders(textarea.value);
  const undeclared = [...names].filter((n) => !declared.includes(n));
  const parts = [];
  if (declared.length) {
    parts.push(h('div', { class: 'chips' },
      h('span', { class: 'hint' }, 'Insert:'),
      declared.map((name) => h('button', {
        type: 'button',
        class: `chip chip-button${names.has(name) ? ' used' : ''}`,
        'aria-label': `Insert {${name}} into ${label}`,
        title: names.has(name) ? 'Used in this text' : 'Not used yet',
        onclick: () => insertAtCaret(textarea, `{${name}}`),
      }, `{${name}}`)),
    ));
  } else {
    parts.push(h('p', { class: 'hint' }, 'Declare variables below to use them here as {name}.'));
  }
  for (const name of undeclared) {
    parts.push(h('p', { class: 'hint hint-warn' },
      h('code', {}, `{${name}}`), ' is used but not declared. ',
      h('button', { type: 'button', class: 'link-button', onclick: () => { addVariable(name); refreshHints(); setDirty(true); } }, `Declare ${name}`)));
  }
  for (const p of problems) parts.push(h('p', { class: 'hint hint-warn' }, p));
  box.replaceChildren(...parts);
}

function refreshHints() {
  hintsFor($('#f-instructions'), $('#vars-hint'), 'instructions');
  hintsFor($('#f-greeting'), $('#greeting-hint'), 'greeting');
}

// ------------------------------------------------------------------ schema

function parseSchema() {
  const text = $('#f-schema').value.trim();
  if (!text) return { value: STARTER_SCHEMA };
  try {
    return { value: JSON.parse(text) };
  } catch (e) {
    return { error: `Not valid JSON: ${e.message}` };
  }
}

function refreshSchema() {
  const { value, error } = parseSchema();
  const err = $('#schema-json-error');
  const textarea = $('#f-schema');
  err.textContent = error || '';
  if (error) textarea.setAttribute('aria-invalid', 'true');
  else if (!textarea.closest('.has-error')) textarea.removeAttribute('aria-invalid');
  const preview = $('#schema-preview');
  const props = value && typeof value === 'object' ? value.properties : null;
  if (!props || typeof props !== 'object' || !Object.keys(props).length) {
    preview.replaceChildren(error ? '' : h('p', { class: 'hint' }, 'No fields yet: add properties to have the agent record data.'));
    return;
  }
  const required = new Set(Array.isArray(value.required) ? value.required : []);
  fill(preview,
    h('span', { class: 'hint' }, `Records ${Object.keys(props).length} field${Object.keys(props).length === 1 ? '' : 's'}:`),
    Object.entries(props).map(([name, p]) => h('span', { class: 'chip', title: p?.description || '' },
      h('code', {}, name), ' ', h('span', { class: 'muted' }, [].concat(p?.type || 'any').join('|')),
      required.has(name) ? h('span', { class: 'req', title: 'required' }, '*') : null)),
  );
}

// ------------------------------------------------------------------ tools

function httpToolCard(tool = {}) {
  const n = ++varSeq;
  const id = (s) => `tool-${n}-${s}`;
  const field = (key, labelText, control, hint) => h('div', { class: 'field', dataset: { key } },
    h('label', { for: control.id }, labelText), control, hint ? h('p', { class: 'hint' }, hint) : null);
  const card = h('div', { class: 'tool-card', dataset: { field: '' } },
    h('div', { class: 'tool-card-head' },
      h('strong', {}, 'HTTP tool'),
      h('button', { type: 'button', class: 'btn btn-small btn-ghost-danger', 'aria-label': `Remove HTTP tool ${n}`, onclick: () => { card.remove(); setDirty(true); } }, 'Remove')),
    h('div', { class: 'grid-3' },
      field('name', 'Tool name', h('input', { id: id('name'), class: 'tool-name mono-id', value: tool.name || '', autocomplete: 'off', spellcheck: 'false', placeholder: 'lookup_order' })),
      field('method', 'Method', h('select', { id: id('method'), class: 'tool-method' }, METHODS.map((m) => h('option', { value: m, selected: (tool.method || 'POST') === m }, m)))),
      field('timeout_s', 'Timeout (s)', h('input', { id: id('timeout'), class: 'tool-timeout', type: 'number', min: 0.1, max: 30, step: 0.5, value: tool.timeout_s ?? '', placeholder: '5' })),
    ),
    field('url', 'URL', h('input', { id: id('url'), class: 'tool-url', type: 'url', value: tool.url || '', placeholder: 'https://api.example.com/orders', autocomplete: 'off' })),
    field('description', 'Tool description', h('textarea', { id: id('description'), class: 'tool-description', rows: 2 }, tool.description || ''), 'Tells the model when to call it.'),
    h('div', { class: 'grid-2' },
      field('parameters', 'Parameters (JSON Schema)', h('textarea', { id: id('parameters'), class: 'tool-parameters mono', rows: 5, spellcheck: 'false' },
        JSON.stringify(tool.parameters || { type: 'object', properties: {} }, null, 2))),
      field('headers', 'Headers (JSON object)', h('textarea', { id: id('headers'), class: 'tool-headers mono', rows: 5, spellcheck: 'false' },
        JSON.stringify(tool.headers || {}, null, 2))),
    ),
  );
  return card;
}

/** The tools array (built-ins first, then HTTP tools), tagging each card with its index. */
function readTools(errors) {
  const tools = [];
  for (const box of [$('#f-tool-end-session'), $('#f-tool-transfer')]) {
    if (box.checked && box.value && !tools.some((t) => t.name === box.value)) tools.push({ type: 'builtin', name: box.value });
  }
  for (const card of $$('#http-tools .tool-card')) {
    const idx = tools.length;
    const base = `tools.${idx}.http`;
    card.dataset.field = base;
    for (const f of $$('[data-key]', card)) f.dataset.field = `${base}.${f.dataset.key}`;
    const json = (sel, key) => {
      const text = $(sel, card).value.trim();
      if (!text) return undefined;
      try { return JSON.parse(text); } catch (e) { errors.push({ key: `${base}.${key}`, message: `Not valid JSON: ${e.message}` }); return undefined; }
    };
    const tool = {
      type: 'http',
      name: $('.tool-name', card).value.trim(),
      description: $('.tool-description', card).value.trim(),
      method: $('.tool-method', card).value,
      url: $('.tool-url', card).value.trim(),
    };
    const timeout = $('.tool-timeout', card).value.trim();
    if (timeout) tool.timeout_s = Number(timeout);
    const parameters = json('.tool-parameters', 'parameters');
    if (parameters !== undefined) tool.parameters = parameters;
    const headers = json('.tool-headers', 'headers');
    if (headers !== undefined) tool.headers = headers;
    tools.push(tool);
  }
  return tools;
}

// ------------------------------------------------------------------ fallbacks

// [key, label, type, placeholder]; a key with a dot is nested (timeouts.first_token_s).
const FALLBACK_FIELDS = {
  llm: [['model', 'Model', 'text', 'server default'], ['base_url', 'Base URL', 'url', 'http://127.0.0.1:8080/v1'],
    ['timeouts.first_token_s', 'First token (s)', 'number', 'as the primary']],
  stt: [['model', 'Model', 'text', 'server default'], ['base_url', 'Base URL', 'url', 'https://stt.example.com/v1'],
    ['timeouts.first_byte_s', 'First byte (s)', 'number', 'as the primary']],
  tts: [['model', 'Model', 'text', 'server default'], ['voice', 'Voice', 'text', 'as the primary'],
    ['base_url', 'Base URL', 'url', 'https://tts.example.com/v1'], ['timeouts.first_byte_s', 'First byte (s)', 'number', 'as the primary']],
};

const getPath = (obj, key) => key.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);

function renumberFallbacks(kind) {
  $$(`#${kind}-fallbacks .fallback-row`).forEach((row, i) => {
    row.dataset.field = `${kind}.fallbacks.${i}`;
    $('.fallback-title', row).textContent = `Fallback ${i + 1}`;
    for (const f of $$('[data-key]', row)) f.dataset.field = `${kind}.fallbacks.${i}.${f.dataset.key}`;
  });
}

/** One alternative provider; the object it was loaded from is kept for the fields the row does not show. */
function fallbackRow(kind, fb = {}) {
  const n = ++varSeq;
  const row = h('div', { class: 'fallback-row', dataset: { kind } });
  row.loaded = fb;
  const fields = FALLBACK_FIELDS[kind].map(([key, label, type, placeholder]) => {
    const id = `fb-${kind}-${n}-${key.replace('.', '-')}`;
    const input = h('input', {
      id, class: 'fb-input', type, value: getPath(fb, key) ?? '', placeholder, autocomplete: 'off', spellcheck: 'false',
      step: type === 'number' ? '0.1' : undefined, min: type === 'number' ? '0.1' : undefined,
    });
    return h('div', { class: 'field', dataset: { key } }, h('label', { for: id }, label), input);
  });
  const move = (delta) => {
    const sibling = delta < 0 ? row.previousElementSibling : row.nextElementSibling;
    if (!sibling) return;
    if (delta < 0) sibling.before(row); else sibling.after(row);
    renumberFallbacks(kind);
    setDirty(true);
  };
  row.append(
    h('div', { class: 'fallback-head' },
      h('strong', { class: 'fallback-title' }, 'Fallback'),
      h('span', { class: 'actions' },
        h('button', { type: 'button', class: 'btn btn-small', title: 'Try earlier', 'aria-label': `Move ${kind} fallback ${n} up`, onclick: () => move(-1) }, '↑'),
        h('button', { type: 'button', class: 'btn btn-small btn-ghost-danger', 'aria-label': `Remove ${kind} fallback ${n}`,
          onclick: () => { row.remove(); renumberFallbacks(kind); setDirty(true); } }, 'Remove'))),
    h('div', { class: 'grid-2' }, fields),
  );
  return row;
}

function addFallback(kind, fb = {}) {
  const row = fallbackRow(kind, fb);
  $(`#${kind}-fallbacks`).append(row);
  renumberFallbacks(kind);
  return row;
}

function readFallbacks(kind) {
  renumberFallbacks(kind);
  return $$(`#${kind}-fallbacks .fallback-row`).map((row) => {
    const fb = structuredClone(row.loaded || {});
    fb.provider = 'openai';
    for (const input of $$('.fb-input', row)) {
      const key = input.closest('[data-key]').dataset.key;
      const raw = input.value.trim();
      const value = raw === '' ? null : (input.type === 'number' ? Number(raw) : raw);
      if (key.includes('.')) {
        const [outer, inner] = key.split('.');
        const obj = { ...(fb[outer] || {}) };
        if (value === null) delete obj[inner]; else obj[inner] = value;
        fb[outer] = Object.keys(obj).length ? obj : null;
      } else {
        fb[key] = value;
      }
    }
    return fb;
  });
}

/** `timeouts` of a provider: the loaded ones with the form's values; empty means the default. */
function readTimeouts(loaded, fields) {
  const out = { ...(loaded || {}) };
  for (const [key, sel] of fields) {
    const v = num(sel);
    if (v === null) delete out[key]; else out[key] = v;
  }
  return out;
}

// ------------------------------------------------------------------ handoffs

function renderHandoffs(selected = []) {
  const box = $('#handoffs');
  const legend = box.querySelector('legend');
  const others = state.agents.filter((a) => a.agent_id !== (state.agentId || val('#f-agent-id')));
  const known = new Set(others.map((a) => a.agent_id));
  const items = others.map((a) => ({ id: a.agent_id, name: a.name, enabled: a.enabled }));
  for (const id of selected) if (!known.has(id)) items.push({ id, name: 'not found', enabled: false });
  const checks = items.map((a) => h('div', { class: 'field-check' },
    h('input', { type: 'checkbox', id: `handoff-${a.id}`, value: a.id, checked: selected.includes(a.id) }),
    h('label', { for: `handoff-${a.id}` }, a.name, ' ', h('code', { class: 'muted' }, a.id), a.enabled ? null : [' ', badge('disabled', 'neutral')])));
  box.replaceChildren(legend, ...(checks.length ? checks : [h('p', { class: 'hint' }, 'No other agents yet.')]));
}

const readHandoffs = () => $$('#handoffs input[type=checkbox]').filter((b) => b.checked).map((b) => b.value);

// ------------------------------------------------------------------ whole form

function setInput(sel, value) {
  $(sel).value = value ?? '';
}

function fillForm(cfg) {
  setInput('#f-agent-id', cfg.agent_id);
  setInput('#f-name', cfg.name);
  setInput('#f-description', cfg.description);
  $('#f-enabled').checked = cfg.enabled !== false;
  $('#f-auto-publish').checked = cfg.auto_publish !== false;
  const p = cfg.prompt_config || {};
  setInput('#f-instructions', p.instructions);
  setInput('#f-greeting', p.greeting);
  $('#variables-body').replaceChildren();
  for (const [name, spec] of Object.entries(p.variables || {})) addVariable(name, spec);
  refreshEmptyVariables();
  $('#f-schema').value = JSON.stringify(cfg.schema_config || STARTER_SCHEMA, null, 2);
  const llm = cfg.llm || {};
  setInput('#f-llm-model', llm.model);
  setInput('#f-llm-temperature', llm.temperature);
  setInput('#f-llm-max-tokens', llm.max_tokens);
  setInput('#f-llm-base-url', llm.base_url);
  $('#f-llm-cap-param').value = llm.max_tokens_param || 'auto';
  setInput('#f-llm-repetition', llm.repetition_limit);
  setInput('#f-llm-t-connect', llm.timeouts?.connect_s);
  setInput('#f-llm-t-first', llm.timeouts?.first_token_s);
  setInput('#f-llm-t-total', llm.timeouts?.total_s);
  const stt = cfg.stt || {};
  setInput('#f-stt-model', stt.model);
  setInput('#f-stt-language', stt.language);
  setInput('#f-stt-base-url', stt.base_url);
  setInput('#f-stt-t-connect', stt.timeouts?.connect_s);
  setInput('#f-stt-t-first', stt.timeouts?.first_byte_s);
  setInput('#f-stt-t-total', stt.timeouts?.total_s);
  const tts = cfg.tts || {};
  setInput('#f-tts-model', tts.model);
  setInput('#f-tts-voice', tts.voice);
  setInput('#f-tts-speed', tts.speed);
  setInput('#f-tts-instructions', tts.instructions);
  setInput('#f-tts-base-url', tts.base_url);
  setInput('#f-tts-t-connect', tts.timeouts?.connect_s);
  setInput('#f-tts-t-first', tts.timeouts?.first_byte_s);
  setInput('#f-tts-t-total', tts.timeouts?.total_s);
  for (const [kind, c] of [['llm', llm], ['stt', stt], ['tts', tts]]) {
    $(`#${kind}-fallbacks`).replaceChildren();
    for (const fb of c.fallbacks || []) addFallback(kind, fb);
  }
  const budget = cfg.budget || {};
  setInput('#f-budget-tokens', budget.llm_tokens);
  setInput('#f-budget-chars', budget.tts_characters);
  setInput('#f-budget-duration', budget.duration_s);
  setInput('#f-budget-wrap', budget.wrap_up_at);
  const analysis = cfg.analysis || {};
  setInput('#f-analysis-summary', analysis.summary_prompt);
  setInput('#f-analysis-success', analysis.success_criteria);
  $('#f-analysis-schema').value = analysis.extraction_schema ? JSON.stringify(analysis.extraction_schema, null, 2) : '';
  setInput('#f-analysis-model', analysis.model);
  setInput('#f-analysis-timeout', analysis.timeout_s);
  setInput('#f-analysis-attempts', analysis.max_attempts);
  const vad = cfg.vad || {};
  setInput('#f-vad-min-speech', vad.min_speech_duration);
  setInput('#f-vad-min-silence', vad.min_silence_duration);
  setInput('#f-vad-threshold', vad.activation_threshold);
  const names = (cfg.tools || []).filter((t) => t.type === 'builtin').map((t) => t.name);
  $('#f-tool-end-session').checked = names.includes('end_session');
  $('#f-tool-transfer').checked = names.includes('transfer');
  $('#http-tools').replaceChildren(...(cfg.tools || []).filter((t) => t.type === 'http').map(httpToolCard));
  renderHandoffs(cfg.handoffs || []);
  refreshHints();
  refreshSchema();
}

/** The analysis settings, or null when none of its three tasks is filled in. */
function readAnalysis(errors) {
  const schemaText = $('#f-analysis-schema').value.trim();
  let schema = null;
  if (schemaText) {
    try { schema = JSON.parse(schemaText); } catch (e) {
      errors.push({ key: 'analysis.extraction_schema', message: `Not valid JSON: ${e.message}` });
    }
  }
  const summary = orNull($('#f-analysis-summary').value.trim());
  const success = orNull($('#f-analysis-success').value.trim());
  if (summary === null && success === null && !schemaText) return null;
  const out = { summary_prompt: summary, success_criteria: success, extraction_schema: schema, model: orNull(val('#f-analysis-model')) };
  const timeout = num('#f-analysis-timeout');
  const attempts = num('#f-analysis-attempts');
  if (timeout !== null) out.timeout_s = timeout;
  if (attempts !== null) out.max_attempts = attempts;
  return out;
}

/** {body, errors}: the AgentConfigInput to send, or client-side errors to show. */
function readForm() {
  const errors = [];
  const base = state.loaded ? structuredClone(state.loaded) : {};
  delete base.version;
  delete base.created_at;
  delete base.updated_at;
  const { value: schema, error: schemaError } = parseSchema();
  if (schemaError) errors.push({ key: 'schema_config', message: schemaError });
  const body = {
    ...base,
    agent_id: state.mode === 'edit' ? state.agentId : val('#f-agent-id'),
    name: val('#f-name'),
    description: $('#f-description').value.trim(),
    enabled: state.mode === 'edit' ? state.loaded.enabled : $('#f-enabled').checked,
    auto_publish: $('#f-auto-publish').checked,
    prompt_config: {
      instructions: $('#f-instructions').value,
      greeting: orNull($('#f-greeting').value.trim()),
      variables: readVariables(),
    },
    schema_config: schema,
    llm: {
      ...(base.llm || {}), provider: 'openai',
      model: orNull(val('#f-llm-model')), temperature: num('#f-llm-temperature'),
      max_tokens: num('#f-llm-max-tokens'), base_url: orNull(val('#f-llm-base-url')),
      max_tokens_param: $('#f-llm-cap-param').value,
      timeouts: readTimeouts(base.llm?.timeouts, [['connect_s', '#f-llm-t-connect'], ['first_token_s', '#f-llm-t-first'], ['total_s', '#f-llm-t-total']]),
      fallbacks: readFallbacks('llm'),
    },
    stt: {
      ...(base.stt || {}), provider: 'openai', model: orNull(val('#f-stt-model')), base_url: orNull(val('#f-stt-base-url')),
      timeouts: readTimeouts(base.stt?.timeouts, [['connect_s', '#f-stt-t-connect'], ['first_byte_s', '#f-stt-t-first'], ['total_s', '#f-stt-t-total']]),
      fallbacks: readFallbacks('stt'),
    },
    tts: {
      ...(base.tts || {}), provider: 'openai',
      model: orNull(val('#f-tts-model')), voice: orNull(val('#f-tts-voice')),
      instructions: orNull(val('#f-tts-instructions')), base_url: orNull(val('#f-tts-base-url')),
      timeouts: readTimeouts(base.tts?.timeouts, [['connect_s', '#f-tts-t-connect'], ['first_byte_s', '#f-tts-t-first'], ['total_s', '#f-tts-t-total']]),
      fallbacks: readFallbacks('tts'),
    },
    budget: {
      ...(base.budget || {}),
      llm_tokens: num('#f-budget-tokens'), tts_characters: num('#f-budget-chars'), duration_s: num('#f-budget-duration'),
    },
    vad: { ...(base.vad || {}), provider: 'silero' },
    analysis: readAnalysis(errors),
    tools: readTools(errors),
    handoffs: readHandoffs(),
  };
  // Fields with a non-null default: empty means "use the default", so leave them out.
  const optional = (obj, key, value) => { if (value === null) delete obj[key]; else obj[key] = value; };
  optional(body.stt, 'language', orNull(val('#f-stt-language')));
  optional(body.tts, 'speed', num('#f-tts-speed'));
  optional(body.vad, 'min_speech_duration', num('#f-vad-min-speech'));
  optional(body.vad, 'min_silence_duration', num('#f-vad-min-silence'));
  optional(body.vad, 'activation_threshold', num('#f-vad-threshold'));
  optional(body.budget, 'wrap_up_at', num('#f-budget-wrap'));
  optional(body.llm, 'repetition_limit', num('#f-llm-repetition'));
  if (!body.agent_id) errors.push({ key: 'agent_id', message: 'Give the agent an ID.' });
  if (!body.name) errors.push({ key: 'name', message: 'Give the agent a name.' });
  if (!body.prompt_config.instructions.trim()) errors.push({ key: 'prompt_config.instructions', message: 'Instructions cannot be empty.' });
  return { body, errors };
}

// ------------------------------------------------------------------ header

function renderHeader() {
  if (state.mode === 'create') {
    $('#agent-title').textContent = 'New agent';
    $('#crumb-current').textContent = 'New';
    $('#agent-sub').textContent = 'Everything but the ID can be changed later; each save becomes a new version.';
    $('#agent-actions').replaceChildren();
    setTitle('New agent');
    return;
  }
  const a = state.loaded;
  setTitle(a.name);
  $('#agent-title').replaceChildren(a.name, ' ', a.enabled ? badge('Enabled', 'success') : badge('Disabled', 'neutral'));
  $('#crumb-current').textContent = a.agent_id;
  $('#agent-sub').replaceChildren(
    h('code', { class: 'mono-id' }, a.agent_id), ' · ', h('span', { id: 'agent-version' }, `version ${a.version}`),
    ' · saved ', timeAgo(a.updated_at));
  const id = encodeURIComponent(a.agent_id);
  $('#agent-actions').replaceChildren(
    h('a', { class: 'btn', href: `/agents/${id}/history` }, 'History'),
    h('button', { type: 'button', class: 'btn', id: 'run-tests', onclick: runTests }, 'Run tests'),
    h('a', { class: 'btn', href: `/talk?agent=${id}` }, 'Talk'),
    h('button', { type: 'button', class: 'btn', id: 'toggle-enabled', onclick: toggleEnabled }, a.enabled ? 'Disable' : 'Enable'),
    h('button', { type: 'button', class: 'btn btn-ghost-danger', id: 'delete-agent', onclick: deleteAgent }, 'Delete'),
  );
}

/** Run the agent's stored tests against this version; the results show on the history page. */
async function runTests(e) {
  const button = e.currentTarget;
  button.disabled = true;
  clearNotices();
  const id = encodeURIComponent(state.loaded.agent_id);
  try {
    await api('POST', `/agents/config/${id}/versions/${state.version}/test-runs`);
    location.href = `/agents/${id}/history#tests`;
  } catch (err) {
    button.disabled = false;
    showError(err, 'Could not run the tests');
  }
}

function applySaved(result) {
  state.loaded = result.data;
  state.version = result.version ?? result.data.version;
  renderHeader();
  // a saved version may be a draft (or published): the Publishing card says which
  if (state.mode === 'edit' && !$('#release-section').hidden) renderRelease($('#agent-release'), state.agentId);
}

// ------------------------------------------------------------------ actions

async function save(event) {
  event.preventDefault();
  clearNotices();
  clearFieldErrors(form(), summary());
  const { body, errors } = readForm();
  if (errors.length) {
    showFieldErrors(form(), summary(), errors, { title: 'The agent was not saved:' });
    return;
  }
  const button = $('#save-button');
  setBusy(button, true, state.mode === 'create' ? 'Creating…' : 'Saving…');
  try {
    if (state.mode === 'create') {
      const res = await api('POST', '/agents/config', { body });
      state.dirty = false;
      flash(`Agent “${res.data.name}” created (version 1).`);
      location.href = `/agents/${encodeURIComponent(res.data.agent_id)}`;
      return;
    }
    const res = await api('PUT', `/agents/config/${encodeURIComponent(state.agentId)}`, { body, ifMatch: state.version });
    applySaved(res);
    setDirty(false);
    toast(`Saved as version ${state.version}.`);
  } catch (err) {
    handleWriteError(err, 'The agent was not saved');
  } finally {
    setBusy(button, false);
  }
}

function handleWriteError(err, what) {
  if (err.status === 422 && err.fieldErrors.length) {
    showFieldErrors(form(), summary(), err.fieldErrors, { title: `${what}:` });
  } else if (err.status === 412) {
    showConflict(err, { actions: [h('button', { type: 'button', class: 'btn btn-small', onclick: reloadPage }, 'Reload')] });
  } else if (err.status === 409 && state.mode === 'create') {
    showFieldErrors(form(), summary(), [{ key: 'agent_id', message: err.detail }], { title: `${what}:` });
  } else {
    showError(err, what);
  }
}

async function toggleEnabled() {
  const enable = !state.loaded.enabled;
  const button = $('#toggle-enabled');
  setBusy(button, true);
  clearNotices();
  try {
    const res = await api('PATCH', `/agents/config/${encodeURIComponent(state.agentId)}`, { body: { enabled: enable }, ifMatch: state.version });
    applySaved(res);
    toast(`Agent ${enable ? 'enabled' : 'disabled'} (version ${state.version}).`);
  } catch (err) {
    setBusy(button, false);
    handleWriteError(err, `Could not ${enable ? 'enable' : 'disable'} the agent`);
  }
}

async function deleteAgent() {
  const ok = await confirmDialog({
    title: `Delete ${state.loaded.name}?`,
    message: `This deletes “${state.agentId}” and its whole version history. Sessions already running are not affected.`,
    confirm: 'Delete agent',
    danger: true,
  });
  if (!ok) return;
  clearNotices();
  try {
    await api('DELETE', `/agents/config/${encodeURIComponent(state.agentId)}`, { ifMatch: state.version });
    state.dirty = false;
    flash(`Agent “${state.agentId}” deleted.`);
    location.href = '/agents';
  } catch (err) {
    if (err.status === 409) {
      notice('error', err.detail, {
        title: 'This agent cannot be deleted:',
        actions: [h('a', { class: 'btn btn-small', href: '/routes' }, 'Open routes')],
      });
    } else {
      handleWriteError(err, 'Could not delete the agent');
    }
  }
}

// ------------------------------------------------------------------ init

export async function init(data) {
  state.mode = data.mode;
  state.agentId = data.agentId || null;
  const f = form();
  f.addEventListener('submit', save);
  f.addEventListener('input', () => setDirty(true));
  f.addEventListener('change', () => setDirty(true));
  window.addEventListener('beforeunload', (e) => { if (state.dirty) e.preventDefault(); });
  $('#add-variable').addEventListener('click', () => { $('.var-name', addVariable()).focus(); setDirty(true); });
  $('#add-http-tool').addEventListener('click', () => { const card = httpToolCard(); $('#http-tools').append(card); $('.tool-name', card).focus(); setDirty(true); });
  for (const kind of ['llm', 'stt', 'tts']) {
    $(`#add-${kind}-fallback`).addEventListener('click', () => { $('.fb-input', addFallback(kind)).focus(); setDirty(true); });
  }
  $('#f-instructions').addEventListener('input', refreshHints);
  $('#f-greeting').addEventListener('input', refreshHints);
  $('#variables-body').addEventListener('input', refreshHints);
  $('#f-schema').addEventListener('input', refreshSchema);
  $('#format-schema').addEventListener('click', () => {
    const { value, error } = parseSchema();
    if (!error) $('#f-schema').value = JSON.stringify(value, null, 2);
    refreshSchema();
  });

  try {
    const [agents, current] = await Promise.all([
      getAll('/agents/config'),
      state.mode === 'edit' ? api('GET', `/agents/config/${encodeURIComponent(state.agentId)}`) : null,
    ]);
    state.agents = agents;
    if (current) applySaved(current);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      $('#agent-title').textContent = 'Agent not found';
      $('#crumb-current').textContent = state.agentId;
      f.hidden = true;
      notice('warn', `There is no agent “${state.agentId}”. It may have been deleted.`, {
        actions: [h('a', { class: 'btn btn-small', href: '/agents' }, 'Back to agents')],
      });
      return;
    }
    showError(err, 'Could not load the agent');
    f.hidden = true;
    return;
  }

  if (state.mode === 'edit') {
    $('#f-agent-id').readOnly = true;
    $('#h-agent-id').textContent = 'The ID cannot be changed.';
    $('#enabled-field').hidden = true;
    $('#save-button').textContent = 'Save changes';
    $('#cancel-link').href = '/agents';
    fillForm(state.loaded);
    $('#latency-section').hidden = false;
    renderAgentLatency($('#agent-latency'), state.agentId);
    $('#release-section').hidden = false;
    renderRelease($('#agent-release'), state.agentId);
  } else {
    $('#save-button').textContent = 'Create agent';
    renderHeader();
    fillForm({ enabled: true, schema_config: STARTER_SCHEMA, tools: [{ type: 'builtin', name: 'end_session' }] });
    $('#f-agent-id').addEventListener('input', () => renderHandoffs(readHandoffs()));
    $('#f-agent-id').focus();
  }
  setDirty(false);
}

