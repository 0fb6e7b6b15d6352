// The one way the console talks to the admin API: JSON in and out, the admin key on
// every call, errors as ApiError with the API's {status_code, detail, extra} shape.
import { getKey, promptForKey } from './auth.js';

export const API = '/api/v1';

export class ApiError extends Error {
  constructor(status, body = {}, headers = null) {
    super(body.detail || (status ? `HTTP ${status}` : 'cannot reach the server'));
    this.status = status;
    this.detail = body.detail || this.message;
    this.extra = body.extra ?? null;
    this.headers = headers;
  }

  /** Field errors of a 422 as [{key, message}]. */
  get fieldErrors() {
    if (!Array.isArray(this.extra)) return [];
    return this.extra.map((e) => ({ key: e.key ?? '', message: String(e.message ?? '') }));
  }

  /** For a 412: the version the server has now. */
  get currentVersion() {
    const v = this.extra?.current_version;
    if (v != null) return v;
    const tag = this.headers?.get('ETag');
    return tag ? Number(tag.replace(/\D/g, '')) : null;
  }
}

export const etagOf = (version) => `"${version}"`;

/**
 * Call the API. `query` values that are empty are dropped; `ifMatch` is a version number.
 * Resolves to {data, status, etag}; rejects with ApiError (status 0: network failure).
 * A 401 sends the user back to the key prompt and reloads the page once a key is accepted.
 */
export async function api(method, path, { body, query, ifMatch, headers = {}, auth = 'admin' } = {}) {
  const url = new URL(API + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  const h = { Accept: 'application/json', ...headers };
  const key = auth === 'admin' ? getKey() : auth;
  if (key) h.Authorization = `Bearer ${key}`;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  if (ifMatch != null) h['If-Match'] = etagOf(ifMatch);

  let res;
  try {
    res = await fetch(url, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, { detail: 'cannot reach the server: check that it is running' });
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { detail: text.slice(0, 300) }; }
  }
  if (!res.ok) {
    const error = new ApiError(res.status, data || {}, res.headers);
    if (res.status === 401 && auth === 'admin') {
      promptForKey('The server did not accept the admin key. Enter it again.').then(() => location.reload());
    }
    throw error;
  }
  const etag = res.headers.get('ETag');
  return { data, status: res.status, etag, version: etag ? Number(etag.replace(/\D/g, '')) : null };
}

export const get = (path, opts) => api('GET', path, opts).then((r) => r.data);

/** Every item of a paginated list endpoint ({items, total, offset, limit}). */
export async function getAll(path, query = {}) {
  const items = [];
  for (let offset = 0; ; offset += 200) {
    const page = await get(path, { query: { ...query, offset, limit: 200 } });
    items.push(...page.items);
    if (items.length >= page.total || page.items.length === 0) return items;
  }
}
