// Entry point of every console page: make sure there is an admin key, then run the
// page's module (named by <body data-page>).
import { ensureKey } from './auth.js';
import { notice, showFlash } from './ui.js';

const PAGES = {
  agents: './pages/agents.js',
  agent: './pages/agent.js',
  history: './pages/history.js',
  routes: './pages/routes.js',
  sessions: './pages/sessions.js',
  session: './pages/session.js',
  usage: './pages/usage.js',
  webhooks: './pages/webhooks.js',
  keys: './pages/keys.js',
  campaigns: './pages/campaigns.js',
  talk: './pages/talk.js',
};

async function start() {
  const page = document.body.dataset.page;
  await ensureKey();
  showFlash();
  const mod = await import(PAGES[page]);
  await mod.init(document.body.dataset);
  document.body.dataset.ready = 'true'; // the page has loaded its data (tests wait on it)
}

start().catch((err) => {
  console.error(err);
  if (err?.status === 401) return; // the key prompt is already up
  notice('error', err?.detail || err?.message || String(err), { title: 'This page could not load:' });
});
