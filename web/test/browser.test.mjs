// The terminal page in a real browser (Debian's chromium through
// playwright-core) against a real daemon: log in, run a shell, survive a cut
// connection without losing or repeating a byte, restore the screen after a
// reload and after a reconnect the ring could not bridge, follow the
// window's size.
//
// Env: TETHER_BIN (default ../target/debug/tether), CHROMIUM (default
// /usr/bin/chromium). Run with scripts/browser-tests.sh, or
// `npm run test:browser` in web/ after `cargo build -p tether`.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const BIN = process.env.TETHER_BIN || `${repo}target/debug/tether`;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = `${repo}target/artifacts`;
/** Upper bound for any single thing we wait for in the page. */
const WAIT_MS = 15_000;
const TEST_MS = 60_000;

let daemon;
let browser;

before(async () => {
  daemon = await startDaemon();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'], timeout: 30_000 });
});

after(async () => {
  await browser?.close();
  await daemon?.stop();
});

test('the page logs in and a new shell runs what is typed', { timeout: TEST_MS }, async (t) => {
  const page = await openPage(t);
  await login(page, daemon.token);
  await newShell(page);
  await typeLine(page, 'echo hello');
  await waitForLine(page, 'hello');
  // The token lives in sessionStorage only: never in the URL.
  assert.ok(!page.url().includes(daemon.token), page.url());
  assert.match(page.url(), /#cmd=c-/);
});

test('a wrong token is refused at the form', { timeout: TEST_MS }, async (t) => {
  // The browser logs the refused check request; that one is expected.
  const page = await openPage(t, /status of 401/);
  await page.fill('#token', 'not-the-token');
  await page.click('#login button[type=submit]');
  await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('wrong token'), null, {
    timeout: WAIT_MS,
  });
  assert.equal(await page.isHidden('#app'), true);
});

test('a cut connection resumes: every line exactly once', { timeout: TEST_MS }, async (t) => {
  const page = await openPage(t);
  await login(page, daemon.token);
  await newShell(page);
  await typeLine(page, 'for i in $(seq 1 40); do echo n$i; sleep 0.05; done');
  await waitForLine(page, 'n10');

  // Drop the socket as a network loss would; the status flips at once.
  const status = await page.evaluate(() => {
    window.tether.session.dropConnection();
    return document.getElementById('status').textContent;
  });
  assert.equal(status, 'reconnecting…');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'connected', null, {
    timeout: WAIT_MS,
  });

  await waitForLine(page, 'n40');
  const lines = await bufferLines(page);
  for (let i = 1; i <= 40; i++) {
    const n = lines.filter((l) => l === `n${i}`).length;
    assert.equal(n, 1, `n${i} appears ${n} times in:\n${lines.join('\n')}`);
  }
  // And the shell still takes input on the new connection.
  await typeLine(page, 'echo resumed-ok');
  await waitForLine(page, 'resumed-ok');
});

test('a reload with #cmd= restores the screen', { timeout: TEST_MS }, async (t) => {
  const page = await openPage(t);
  await login(page, daemon.token);
  const command = await newShell(page);
  // More than a screenful, so a restored screen (visible lines only) and a
  // replay of the whole history (r1 in the scrollback) look different.
  await typeLine(page, 'seq 1 200 | sed s/^/r/');
  await waitForLine(page, 'r200');

  await page.reload();
  assert.match(page.url(), new RegExp(`#cmd=${command}$`));
  await page.waitForFunction((c) => window.tether.session?.command === c, command, { timeout: WAIT_MS });
  await waitForLine(page, 'r200');
  const { lines, rows } = await page.evaluate(() => {
    const b = window.tether.term.buffer.active;
    return { lines: b.length, rows: window.tether.term.rows };
  });
  assert.equal(lines, rows, 'a restored screen has no scrollback');
  assert.ok(!(await bufferLines(page)).includes('r1'), 'r1 scrolled off before the reload');
  assert.equal(await page.textContent('#command'), command);

  await typeLine(page, 'echo after-reload');
  await waitForLine(page, 'after-reload');
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}/browser-terminal.png` });
});

test('resizing the window resizes the PTY', { timeout: TEST_MS }, async (t) => {
  const page = await openPage(t);
  await login(page, daemon.token);
  const command = await newShell(page);
  // Resize once the prompt is drawn: readline reads the window size and
  // writes it back as it starts each line, undoing a resize in between.
  await page.waitForFunction(() => window.tether.term.buffer.active.cursorX > 0, null, { timeout: WAIT_MS });
  const before = await termSize(page);
  await page.setViewportSize({ width: 800, height: 500 });
  await page.waitForFunction((b) => window.tether.term.rows < b.rows && window.tether.term.cols < b.cols, before, {
    timeout: WAIT_MS,
  });
  const want = await termSize(page);
  // The daemon's idea of the size follows (status reports info.pty).
  const deadline = Date.now() + WAIT_MS;
  let got;
  while (Date.now() < deadline) {
    got = await page.evaluate((c) => window.tether.conn.request({ type: 'status', command: c }).then((r) => r.info.pty), command);
    if (got?.rows === want.rows && got?.cols === want.cols) break;
    await page.waitForTimeout(100); // polling interval, not synchronisation
  }
  assert.deepEqual(got, want);
  await typeLine(page, 'stty size');
  await waitForLine(page, `${want.rows} ${want.cols}`);
});

test('a reconnect after the ring moved on gets a clean screen', { timeout: TEST_MS }, async (t) => {
  // A daemon whose 4 KiB rings are overtaken while the page is offline, so
  // the resume cannot continue from its offset and must restore the screen.
  const small = await startDaemon(['--ring-bytes', '4096']);
  let page;
  try {
    page = await openPage(t, null, small.url);
  } finally {
    // After the page's own clean-up (hooks run in order), so that a page
    // still open never sees its daemon vanish.
    t.after(() => small.stop());
  }
  await login(page, small.token);
  const command = await newShell(page);
  await typeLine(page, 'sleep 1; seq 1 3000 | sed s/^/q/; echo done-q');
  // Cut only once the shell has the line (its echo is on screen).
  await waitForLine(page, 'sleep 1; seq 1 3000 | sed s/^/q/; echo done-q', { endsWith: true });
  await page.evaluate(() => window.tether.session.dropConnection(3000));
  await page.waitForFunction(() => document.getElementById('status').textContent === 'connected', null, {
    timeout: WAIT_MS,
  });
  await waitForLine(page, 'done-q');

  // The screen shows the end of the output in order, with nothing torn or
  // repeated: ..., q2999, q3000, done-q, prompt.
  const lines = await bufferLines(page);
  const at = lines.indexOf('done-q');
  assert.equal(lines[at - 1], 'q3000', lines.join('\n'));
  const qs = lines.slice(0, at).filter((l) => /^q\d+$/.test(l)).map((l) => Number(l.slice(1)));
  assert.ok(qs.length > 10, lines.join('\n'));
  qs.forEach((n, i) => assert.equal(n, 3000 - qs.length + 1 + i, `q lines not consecutive: ${qs}`));
  // And the page's offset is the daemon's: nothing left to deliver twice.
  const [next, end] = await page.evaluate(async (c) => {
    const { info } = await window.tether.conn.request({ type: 'status', command: c });
    return [window.tether.session.next.stdout, info.stdout.end];
  }, command);
  assert.equal(next, end);
});

// ---- helpers ----------------------------------------------------------------

/** Runs `tether serve` on a free port with a fresh token; resolves once it listens. */
function startDaemon(args = []) {
  const token = randomBytes(24).toString('hex');
  const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', ...args], {
    env: { ...process.env, TETHER_TOKEN: token, TETHER_LOG: process.env.TETHER_LOG || 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('the daemon did not print its address within 20 s')), 20_000);
    const fail = (e) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${e.message}\n${stderr}`));
    };
    const early = (code) => fail(new Error(`the daemon exited (${code}) before listening`));
    child.once('error', fail);
    child.once('exit', early);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/tether: listening on (http:\/\/\S+)/);
      if (!m) return;
      clearTimeout(timer);
      child.off('exit', early);
      resolve({
        url: `${m[1]}/`,
        token,
        /** SIGTERM (the daemon kills its commands), SIGKILL if it lingers. */
        async stop() {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGTERM');
          const late = setTimeout(() => child.kill('SIGKILL'), 10_000);
          await exited;
          clearTimeout(late);
        },
      });
    });
  });
}

/** A fresh browser context on the page; console errors fail the test unless `allow` matches. */
async function openPage(t, allow = null, url = daemon.url) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  // A CSP violation or a script error is a failure even if the UI copes.
  page.on('console', (m) => m.type() === 'error' && !allow?.test(m.text()) && errors.push(new Error(m.text())));
  t.after(() => assert.deepEqual(errors.map(String), []));
  await page.goto(url);
  return page;
}

async function login(page, token) {
  await page.fill('#token', token);
  await page.click('#login button[type=submit]');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'connected', null, {
    timeout: WAIT_MS,
  });
}

/** Clicks "New shell"; resolves with the command id once the session has it. */
async function newShell(page) {
  await page.click('#new-shell');
  const handle = await page.waitForFunction(() => window.tether.session?.command, null, { timeout: WAIT_MS });
  return handle.jsonValue();
}

async function typeLine(page, line) {
  await page.click('#terminal');
  await page.keyboard.type(line);
  await page.keyboard.press('Enter');
}

/**
 * Waits until some line of the terminal (scrollback included) is exactly
 * `text`, or with `endsWith`, ends with it (a prompt before a typed line).
 */
async function waitForLine(page, text, { endsWith = false } = {}) {
  try {
    await page.waitForFunction(
      ([want, suffix]) => {
        const b = window.tether.term.buffer.active;
        for (let i = 0; i < b.length; i++) {
          const line = b.getLine(i)?.translateToString(true).trim() ?? '';
          if (suffix ? line.endsWith(want) : line === want) return true;
        }
        return false;
      },
      [text, endsWith],
      { timeout: WAIT_MS, polling: 50 },
    );
  } catch (e) {
    e.message += `\nwaiting for a line "${text}"; the terminal holds:\n${(await bufferLines(page)).join('\n')}`;
    throw e;
  }
}

/** Every line of the terminal, scrollback included, trimmed. */
function bufferLines(page) {
  return page.evaluate(() => {
    const b = window.tether.term.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true).trim() ?? '');
    return lines;
  });
}

function termSize(page) {
  return page.evaluate(() => ({ rows: window.tether.term.rows, cols: window.tether.term.cols }));
}
