// The terminal page: log in with the token, start or pick a command, show it
// in xterm.js. Protocol work lives in protocol.js; this file is the UI.

import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';

import { TerminalSession, TetherConnection, defaultUrl } from './protocol.js';

/** The token lives in sessionStorage (this tab only), never in the URL. */
const TOKEN_KEY = 'tether.token';
/** A browser shell nobody looks at is killed after this long (a reload or a
 *  laptop sleep is shorter); the daemon's default is 5 minutes. */
const IDLE_TIMEOUT_MS = 30 * 60 * 1000;
const STATUS_TEXT = { connecting: 'connecting…', connected: 'connected', reconnecting: 'reconnecting…', closed: 'disconnected' };

const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();

let conn = null;
let session = null;
const term = new Terminal({ scrollback: 5000, cursorBlink: true, fontFamily: 'monospace', theme: { background: '#1e1e1e' } });
const fit = new FitAddon();
term.loadAddon(fit);
window.tether = { term, session: null, conn: null };

// Keystrokes are UTF-8; onBinary carries raw bytes (some mouse reports).
term.onData((s) => session?.sendStdin(encoder.encode(s)));
term.onBinary((s) => session?.sendStdin(Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff)));

/** The daemon accepts at most 500 rows and columns (PROTOCOL.md section 14). */
const MAX_CELLS = 500;

function size() {
  return { rows: Math.min(term.rows, MAX_CELLS), cols: Math.min(term.cols, MAX_CELLS) };
}

function say(text) {
  $('message').textContent = text;
}

/**
 * `?silence_ms=N&probe_ms=M` in the page's URL set the connection's
 * watchdog (PROTOCOL.md section 12), for a daemon run with a short
 * `--peer-timeout` (the chaos tests freeze the network for a few seconds).
 * A value only changes how soon a dead connection is noticed, nothing a
 * crafted link could abuse; out-of-range values are ignored.
 */
function watchdogOptions() {
  const q = new URLSearchParams(location.search);
  const opts = {};
  for (const [param, key] of [
    ['silence_ms', 'silenceMs'],
    ['probe_ms', 'probeMs'],
  ]) {
    const ms = q.has(param) ? Number(q.get(param)) : NaN;
    if (Number.isInteger(ms) && ms >= 500 && ms <= 600_000) opts[key] = ms;
  }
  return opts;
}

// ---- login ----------------------------------------------------------------

$('login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const token = $('token').value.trim();
  $('login-error').textContent = '';
  // A plain request first: unlike a WebSocket, it tells a wrong token (401)
  // from an unreachable daemon. The token goes in a header only.
  try {
    const resp = await fetch('v1/commands', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
    if (resp.status === 401) throw new Error('wrong token');
    if (!resp.ok) throw new Error(`the daemon answered ${resp.status}`);
  } catch (e) {
    $('login-error').textContent = `Cannot log in: ${e.message}`;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token').value = '';
  enter(token);
});

$('logout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  session?.close();
  conn?.close();
  location.hash = '';
  location.reload();
});

// ---- main view ------------------------------------------------------------

async function enter(token) {
  $('login').hidden = true;
  $('app').hidden = false;
  term.open($('terminal'));
  fit.fit();
  term.focus();

  conn = new TetherConnection({ url: defaultUrl(), token, ...watchdogOptions() });
  window.tether.conn = conn;
  conn.on('state', (state, detail) => {
    $('status').textContent = STATUS_TEXT[state];
    $('status').dataset.state = state;
    if (state === 'closed' && detail) say(detail);
    if (state === 'connected') refreshList();
  });
  try {
    await conn.open();
  } catch (e) {
    // A stale token in sessionStorage, or the daemon is down: back to the form.
    sessionStorage.removeItem(TOKEN_KEY);
    $('login-error').textContent = `Cannot connect: ${e.message}`;
    $('app').hidden = true;
    $('login').hidden = false;
    return;
  }
  const deepLink = new URLSearchParams(location.hash.slice(1)).get('cmd');
  if (deepLink) show((s) => s.attach(deepLink));
}

/** Replaces the current session by a new one that `begin` starts or attaches. */
async function show(begin) {
  session?.close();
  fit.fit();
  const s = new TerminalSession(conn, size());
  session = s;
  window.tether.session = s;
  // Write through xterm's queue so a reset lands after earlier output, not
  // before it (term.reset() would act immediately).
  s.on('reset', (sz) => {
    if (sz && (sz.rows !== term.rows || sz.cols !== term.cols)) term.resize(sz.cols, sz.rows);
    term.write('\x1bc');
  });
  s.on('data', (d) => term.write(d));
  s.on('opened', ({ command, pty }) => {
    // Pipe commands write bare "\n"; a PTY already sends "\r\n".
    term.options.convertEol = !pty;
    $('command').textContent = command;
    history.replaceState(null, '', `#cmd=${encodeURIComponent(command)}`);
  });
  s.on('resized', (sz) => {
    // Another viewer's size won (the most recent request does): render at
    // that size so the output lines up, until this window is resized.
    if (sz.rows !== term.rows || sz.cols !== term.cols) {
      term.resize(sz.cols, sz.rows);
      say(`size ${sz.cols}×${sz.rows}, set by another viewer`);
    }
  });
  s.on('gap', ({ stream, lost }) => term.write(`\r\n\x1b[33m[${lost} bytes of ${stream} lost]\x1b[0m\r\n`));
  s.on('exit', (st) => {
    const how = st.code != null ? `exit code ${st.code}` : `signal ${st.signal}`;
    term.write(`\r\n\x1b[2m[${how}, ${st.reason}]\x1b[0m\r\n`);
    say(`exited (${how})`);
    refreshList();
  });
  s.on('error', (e) => say(`error: ${e.code}: ${e.message}`));
  s.on('ended', () => refreshList());

  term.write('\x1bc'); // queued after the old session's output, unlike term.reset()
  $('command').textContent = '';
  say('');
  try {
    await begin(s);
  } catch (e) {
    if (session === s) say(`cannot open: ${e.code ?? ''} ${e.message}`);
    return;
  }
  if (session !== s) return; // superseded while waiting
  term.focus();
  refreshList();
}

$('new-shell-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const line = $('shell').value.trim();
  const spec = line ? { shell: line } : { argv: ['/bin/bash', '-l'] };
  show((s) => s.start({ ...spec, idle_timeout_ms: IDLE_TIMEOUT_MS }));
});

$('refresh').addEventListener('click', () => refreshList());

async function refreshList() {
  if (conn?.state !== 'connected') return;
  let commands;
  try {
    ({ commands } = await conn.request({ type: 'list' }));
  } catch {
    return; // a reconnect refreshes it
  }
  const ul = $('commands');
  ul.replaceChildren(
    ...commands.map((c) => {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.dataset.command = c.command;
      // textContent only: names and argv come from other clients.
      b.textContent = `${c.name ?? c.argv.join(' ')}`;
      b.title = `${c.command}\n${c.argv.join(' ')}`;
      b.addEventListener('click', () => show((s) => s.attach(c.command)));
      const meta = document.createElement('small');
      meta.textContent = `${c.command} · ${c.pty ? 'pty' : 'pipes'} · ${c.state}`;
      li.append(b, meta);
      li.classList.toggle('current', c.command === session?.command);
      li.classList.toggle('exited', c.state !== 'running');
      return li;
    }),
  );
}

// Fit the terminal to the window and tell the PTY; debounced so a drag
// sends one resize, not fifty.
let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if ($('app').hidden) return;
    fit.fit();
    session?.resize(size());
    say('');
  }, 100);
});

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) enter(saved);
else $('login').hidden = false;
