// The admin key: asked for once, kept in sessionStorage (this tab only), sent on every
// API call by api.js. A 401 anywhere brings the prompt back.
const STORAGE_KEY = 'voice-platform.admin-key';

const authRequired = () => document.body.dataset.auth === 'required';

export function getKey() {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function forgetKey() {
  sessionStorage.removeItem(STORAGE_KEY);
}

let pending = null;

/** Show the key dialog; resolves once the server accepted a key. */
export function promptForKey(reason = '') {
  forgetKey();
  if (pending) return pending;
  const dialog = document.getElementById('key-dialog');
  const form = document.getElementById('key-form');
  const input = document.getElementById('key-input');
  const error = document.getElementById('key-error');
  const reasonBox = document.getElementById('key-reason');
  reasonBox.hidden = !reason;
  reasonBox.textContent = reason;
  error.textContent = '';
  input.value = '';
  input.removeAttribute('aria-invalid');
  pending = new Promise((resolve) => {
    // Escape must not dismiss the prompt: nothing works without a key.
    dialog.addEventListener('cancel', (e) => e.preventDefault());
    form.onsubmit = async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) {
        error.textContent = 'Enter the admin API key.';
        input.setAttribute('aria-invalid', 'true');
        return;
      }
      const button = form.querySelector('button[type=submit]');
      button.disabled = true;
      error.textContent = '';
      try {
        const res = await fetch('/api/v1/agents/config?limit=1', { headers: { Authorization: `Bearer ${key}` } });
        if (res.status === 401) {
          error.textContent = 'That key was not accepted.';
          input.setAttribute('aria-invalid', 'true');
          input.select();
          return;
        }
        if (!res.ok) {
          error.textContent = `The server answered ${res.status}; try again shortly.`;
          return;
        }
      } catch {
        error.textContent = 'Cannot reach the server.';
        return;
      } finally {
        button.disabled = false;
      }
      sessionStorage.setItem(STORAGE_KEY, key);
      dialog.close();
      pending = null;
      showSignOut();
      resolve(key);
    };
    dialog.showModal();
    input.focus();
  });
  return pending;
}

function showSignOut() {
  const button = document.getElementById('sign-out');
  if (!button || !authRequired()) return;
  button.hidden = false;
  button.onclick = () => {
    forgetKey();
    location.reload();
  };
}

/** Resolves when API calls can be made: a key is stored, or the server needs none. */
export async function ensureKey() {
  if (!authRequired()) return null;
  const key = getKey();
  if (key) {
    showSignOut();
    return key;
  }
  return promptForKey();
}
