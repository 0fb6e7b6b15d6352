// Checks one collected value against its JSON Schema property, for the session page.
// It covers the keywords agent schemas use (type, enum, const, lengths, ranges,
// pattern, items, format); the server validated the value when it was recorded, so
// this only explains it, it does not police it.

const typeOf = (v) => (v === null ? 'null' : Array.isArray(v) ? 'array'
  : Number.isInteger(v) ? 'integer' : typeof v);

function typeMatches(value, type) {
  const types = Array.isArray(type) ? type : [type];
  const t = typeOf(value);
  return types.some((x) => x === t || (x === 'number' && t === 'integer'));
}

/** A list of problems (empty when the value fits). */
export function checkValue(value, schema = {}) {
  const problems = [];
  if (schema.type && !typeMatches(value, schema.type)) {
    problems.push(`expected ${[].concat(schema.type).join(' or ')}, got ${typeOf(value)}`);
    return problems;
  }
  if (schema.enum && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    problems.push(`not one of ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}`);
  }
  if ('const' in schema && JSON.stringify(schema.const) !== JSON.stringify(value)) problems.push(`must be ${JSON.stringify(schema.const)}`);
  if (typeof value === 'string') {
    const len = [...value].length;
    if (schema.minLength != null && len < schema.minLength) problems.push(`shorter than ${schema.minLength} characters`);
    if (schema.maxLength != null && len > schema.maxLength) problems.push(`longer than ${schema.maxLength} characters`);
    if (schema.pattern) {
      try { if (!new RegExp(schema.pattern, 'u').test(value)) problems.push('does not match the pattern'); } catch { /* ignore */ }
    }
    if (schema.format === 'email' && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(value)) problems.push('not an email address');
    if (schema.format === 'date' && !/^\d{4}-\d{2}-\d{2}$/.test(value)) problems.push('not a date (YYYY-MM-DD)');
  }
  if (typeof value === 'number') {
    if (schema.minimum != null && value < schema.minimum) problems.push(`below ${schema.minimum}`);
    if (schema.maximum != null && value > schema.maximum) problems.push(`above ${schema.maximum}`);
    if (schema.exclusiveMinimum != null && value <= schema.exclusiveMinimum) problems.push(`not above ${schema.exclusiveMinimum}`);
    if (schema.exclusiveMaximum != null && value >= schema.exclusiveMaximum) problems.push(`not below ${schema.exclusiveMaximum}`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems != null && value.length < schema.minItems) problems.push(`fewer than ${schema.minItems} items`);
    if (schema.maxItems != null && value.length > schema.maxItems) problems.push(`more than ${schema.maxItems} items`);
    if (schema.uniqueItems && new Set(value.map((v) => JSON.stringify(v))).size !== value.length) problems.push('items repeat');
    if (schema.items && typeof schema.items === 'object') {
      value.forEach((item, i) => checkValue(item, schema.items).forEach((p) => problems.push(`item ${i + 1}: ${p}`)));
    }
  }
  return problems;
}

/** Rows for a collected-data table: one per schema property, then extra keys. */
export function compareCollected(collected = {}, schema = {}) {
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const rows = Object.entries(props).map(([name, prop]) => {
    const present = Object.prototype.hasOwnProperty.call(collected, name);
    let state;
    let problems = [];
    if (!present) state = required.has(name) ? 'missing' : 'empty';
    else {
      problems = checkValue(collected[name], prop);
      state = problems.length ? 'invalid' : 'ok';
    }
    return { name, prop, required: required.has(name), present, value: collected[name], state, problems };
  });
  for (const [name, value] of Object.entries(collected)) {
    if (!(name in props)) rows.push({ name, prop: {}, required: false, present: true, value, state: 'extra', problems: ['not in the schema'] });
  }
  return rows;
}
