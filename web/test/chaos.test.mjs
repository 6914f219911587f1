// The chaos matrix's browser cells: the terminal page in headless Chromium
// (Debian's chromium through playwright-core), loaded through the fault
// proxy (`tether-faultproxy`) in front of a daemon with a 3 s peer timeout,
// under each fault of the matrix:
//
// - reset:    every open connection reset (RST) once;
// - freeze:   no byte either way, nothing closed, for longer than the peer
//             timeout, then traffic again;
// - refuse:   open connections reset and new ones refused for 3 s;
// - repeated: three resets about 1 s apart;
// - restart:  a graceful daemon restart (SIGUSR2), no proxy fault;
// - typing:   a reset in the middle of typing, keystrokes in flight.
//
// Each cell: a fresh page logs in and starts a shell, which prints numbered
// lines for a few seconds; the fault strikes while it prints, and meanwhile
// the user types a command. Then every line must have reached the page's
// terminal exactly once and in order (the bytes the session hands to xterm,
// not xterm's screen), the typed command must have run exactly once, a
// further command must work and the shell must still run. The cell's
// reconnect time runs from the network's return (the proxy's restore, the
// restarted daemon's "listening" line) to the first output the page gets
// on a new connection.
//
// Env: TETHER_BIN (default ../target/debug/tether), FAULTPROXY_BIN (default
// ../target/debug/tether-faultproxy; `cargo build -p tether-tests --bins`),
// CHROMIUM (default /usr/bin/chromium), CHAOS_RESULTS (a file each cell
// appends one JSON line to; scripts/chaos-table.py prints them). Run with
// scripts/browser-tests.sh, or `npm run test:chaos` in web/.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const BIN = process.env.TETHER_BIN || `${repo}target/debug/tether`;
const PROXY_BIN = process.env.FAULTPROXY_BIN || `${repo}target/debug/tether-faultproxy`;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const RESULTS = process.env.CHAOS_RESULTS;
const ARTIFACTS = `${repo}target/artifacts`;

/** The daemon's keepalive: a ping a second, a peer silent for 3 s is dropped. */
const PEER_TIMEOUT_S = 3;
const PING_INTERVAL_S = 1;
/** The page's watchdog, as short as the daemon's (app.js reads them from the URL). */
const SILENCE_MS = 3000;
const PROBE_MS = 1000;
/** Fault durations: a freeze outlasts both peer timeouts; a refusal is 3 s. */
const FREEZE_MS = 5000;
const REFUSE_MS = 3000;
const REPEAT_GAP_MS = 1000;
/** Upper bound for any single thing we wait for. */
const WAIT_MS = 20_000;
const CELL_MS = 60_000;

let daemon;
let proxy;
let browser;

before(async () => {
  daemon = await startDaemon();
  proxy = await startProxy(daemon.addr);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'], timeout: 30_000 });
});

after(async () => {
  await browser?.close();
  await proxy?.stop();
  await daemon?.stop();
});

/**
 * The faults. Each runs while the shell prints, has the user type `typed`
 * (a command line, without its Enter) at some point during the fault, and
 * resolves with `backAt`, when the network (or daemon) was back, and
 * `generation`, the page's connection count before the connection that
 * the measured return is about.
 */
const FAULTS = {
  async reset({ page, typed }) {
    const generation = await connections(page);
    // Nothing stays broken after a reset: the network is back at once.
    const backAt = Date.now();
    await proxy.cmd('reset');
    await proxy.cmd('restore'); // time-stamps the return for the proxy's own measure
    await typeLine(page, typed); // while the page reconnects
    return { backAt, generation };
  },

  async freeze({ page, typed }) {
    const generation = await connections(page);
    await proxy.cmd('freeze');
    await typeLine(page, typed); // into a connection that no longer carries anything
    await sleep(FREEZE_MS); // the fault's duration
    const backAt = Date.now();
    await proxy.cmd('restore');
    return { backAt, generation };
  },

  async refuse({ page, typed }) {
    const generation = await connections(page);
    await proxy.cmd('refuse');
    await proxy.cmd('reset');
    await typeLine(page, typed); // while every attempt is refused
    await sleep(REFUSE_MS); // the fault's duration
    const backAt = Date.now();
    await proxy.cmd('restore');
    return { backAt, generation };
  },

  async repeated({ page, typed }) {
    // The line is typed in three parts, one after each reset.
    const parts = [typed.slice(0, 8), typed.slice(8, 16), typed.slice(16)];
    await proxy.cmd('reset');
    await typePart(page, parts[0]);
    await sleep(REPEAT_GAP_MS); // the faults' spacing
    await proxy.cmd('reset');
    await typePart(page, parts[1]);
    await sleep(REPEAT_GAP_MS);
    const generation = await connections(page);
    const backAt = Date.now();
    await proxy.cmd('reset');
    await proxy.cmd('restore');
    await typePart(page, parts[2]);
    await page.keyboard.press('Enter');
    return { backAt, generation };
  },

  async restart({ page, typed }) {
    const generation = await connections(page);
    const listening = daemon.nextListening();
    process.kill(daemon.pid, 'SIGUSR2');
    await typeLine(page, typed); // while the daemon hands over and the page reconnects
    const { at, url } = await listening;
    assert.equal(url, daemon.url, 'the restarted daemon listens on the same socket');
    return { backAt: at, generation };
  },

  async typing({ page, typed }) {
    // Typed one key at a time; the reset comes half-way, and the keys
    // right after it go out (briskly) before the page has noticed it.
    const half = Math.floor(typed.length / 2);
    await typePart(page, typed.slice(0, half), 20);
    const generation = await connections(page);
    const backAt = Date.now();
    const fault = proxy.cmd('reset').then(() => proxy.cmd('restore'));
    await typePart(page, typed.slice(half), 5);
    await fault;
    await page.keyboard.press('Enter');
    return { backAt, generation };
  },
};

/** How long the shell prints, per fault: the fault plus room to come back. */
const PRINT_S = { reset: 3, freeze: 8, refuse: 7, repeated: 5, restart: 3, typing: 3 };

for (const fault of Object.keys(FAULTS)) {
  test(`browser under ${fault}`, { timeout: CELL_MS }, (t) => cell(t, fault));
}

/** Runs one cell, records its result line, and fails the test if the cell failed. */
async function cell(t, fault) {
  const result = { client: 'browser', fault, pass: false, reconnect_ms: null, detail: '' };
  let page;
  let command;
  try {
    ({ page, command } = await openShell(t));
    const tag = randomBytes(4).toString('hex');
    // The shell computes 42, so the output line is not in the echo of the input.
    const typed = `echo typed-$((6*7))-${tag}`;
    const after = `echo after-$((6*7))-${tag}`;
    await typeLine(page, `e=$((SECONDS+${PRINT_S[fault]})); i=0; while [ $SECONDS -lt $e ]; do echo line-$((++i)); sleep 0.005; done; echo printed-$i`);
    await waitForText(page, 'line-20\r\n');

    const { backAt, generation } = await FAULTS[fault]({ page, typed });

    // The first output on a connection made after the fault.
    const first = await waitInPage(
      page,
      'output on a new connection',
      (g) => window.__cap.chunks.find((c) => c.generation > g) ?? null,
      generation,
    );
    result.reconnect_ms = Math.round(Math.max(0, first.at - backAt) * 10) / 10;
    const stats = fault === 'restart' ? null : JSON.parse(await proxy.cmd('stats'));

    const printed = Number(await waitInPage(page, 'the printer to end', () => window.__cap.text.match(/printed-(\d+)\r\n/)?.[1] ?? null));
    await waitForText(page, `typed-42-${tag}\r\n`);
    await typeLine(page, after);
    await waitForText(page, `after-42-${tag}\r\n`);

    const cap = await page.evaluate(() => window.__cap);
    const state = await page.evaluate(async (c) => {
      const { info } = await window.tether.conn.request({ type: 'status', command: c });
      return { state: info.state, session: window.tether.session.command, ended: window.tether.session.ended };
    }, command);

    // Every line once, in order: line-1 .. line-N, nothing else, nothing twice.
    const lines = [...cap.text.matchAll(/line-(\d+)/g)].map((m) => Number(m[1]));
    const wrong = lines.findIndex((n, i) => n !== i + 1);
    assert.ok(printed > 20, `only ${printed} lines printed`);
    assert.equal(wrong, -1, `line #${wrong + 1} is line-${lines[wrong]} (got ${lines.slice(Math.max(0, wrong - 3), wrong + 3)})`);
    assert.equal(lines.length, printed, `${lines.length} lines received, ${printed} printed`);
    assert.equal(count(cap.text, `typed-42-${tag}`), 1, 'the typed command ran once');
    assert.equal(count(cap.text, `after-42-${tag}`), 1, 'the command after the fault ran once');
    assert.equal(cap.gaps, 0, 'no output lost');
    assert.deepEqual(state, { state: 'running', session: command, ended: false }, 'the same shell lives on');
    const reconnects = cap.generation - 1;
    assert.ok(reconnects >= 1, 'the page reconnected');

    result.pass = true;
    result.detail =
      `${printed} lines once each in order, typed line ran once, a later command ran; ` +
      `${reconnects} reconnect${reconnects === 1 ? '' : 's'}, ${cap.resets} screen redraws, ` +
      `${cap.resent} stdin frames resent and ${cap.queued} typed while disconnected` +
      (stats?.reconnected_ms != null ? `; proxy: first byte ${stats.reconnected_ms.toFixed(1)} ms after restore` : '');
  } catch (e) {
    result.detail = String(e.message).split('\n')[0].slice(0, 300);
    if (page) {
      const text = await page.evaluate(() => window.__cap?.text).catch(() => null);
      if (text != null) saveArtifact(fault, text);
    }
    throw e;
  } finally {
    if (RESULTS) appendFileSync(RESULTS, JSON.stringify(result) + '\n');
    // The shell would outlive the page (the page's idle timeout is 30 min).
    if (page && command) {
      await page
        .evaluate((c) => window.tether.conn.request({ type: 'kill', command: c }).catch(() => {}), command)
        .catch(() => {});
    }
  }
}

// ---- the page ---------------------------------------------------------------

/**
 * A fresh browser context on the page through the proxy, logged in, with a
 * new shell whose session's output is captured in `window.__cap`: the text,
 * per chunk the time it arrived and the count of connections so far, and
 * how many stdin frames each reconnect found waiting.
 */
async function openShell(t) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  // Failed WebSocket attempts are what the faults are for; anything else
  // logged as an error (a CSP violation, a handler that threw) fails.
  page.on('console', (m) => m.type() === 'error' && !/WebSocket connection to/.test(m.text()) && errors.push(new Error(m.text())));
  t.after(() => assert.deepEqual(errors.map(String), []));
  await page.goto(`${proxy.url}/?silence_ms=${SILENCE_MS}&probe_ms=${PROBE_MS}`);
  await page.fill('#token', daemon.token);
  await page.click('#login button[type=submit]');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'connected', null, { timeout: WAIT_MS });
  await page.click('#new-shell');
  const command = await waitInPage(page, 'the new shell', () => window.tether.session?.command ?? null);
  await page.evaluate(() => {
    const cap = { text: '', chunks: [], generation: 1, resets: 0, gaps: 0, resent: 0, queued: 0 };
    window.__cap = cap;
    const dec = new TextDecoder();
    const s = window.tether.session;
    window.tether.conn.on('connected', () => {
      cap.generation++;
      // Stdin frames waiting at the reconnect: sent on a connection that is
      // gone without their `ok` (resent now), or typed while disconnected.
      for (const f of s.stdinFrames) {
        if (f.sentOn > 0) cap.resent++;
        else cap.queued++;
      }
    });
    s.on('data', (d) => {
      cap.chunks.push({ at: Date.now(), generation: cap.generation });
      cap.text += dec.decode(d, { stream: true });
    });
    s.on('reset', () => cap.resets++);
    s.on('gap', () => cap.gaps++);
  });
  await page.click('#terminal');
  return { page, command };
}

/** How many connections the page has made (its current one's number). */
function connections(page) {
  return page.evaluate(() => window.__cap.generation);
}

async function typeLine(page, line) {
  await page.keyboard.type(line);
  await page.keyboard.press('Enter');
}

/** Types `text` key by key, `delay` ms apart (a typist's rhythm). */
function typePart(page, text, delay = 0) {
  return page.keyboard.type(text, { delay });
}

/** Waits until the captured output contains `text`. */
function waitForText(page, text) {
  return waitInPage(page, JSON.stringify(text), (s) => window.__cap.text.includes(s) || null, text);
}

/** Waits until `fn(arg)` in the page is truthy; resolves with its value. */
async function waitInPage(page, what, fn, arg) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 50 });
    return await handle.jsonValue();
  } catch (e) {
    const tail = await page.evaluate(() => window.__cap?.text.slice(-300)).catch(() => null);
    throw new Error(`waiting for ${what}: ${e.message.split('\n')[0]}${tail != null ? `; the output ends with ${JSON.stringify(tail)}` : ''}`);
  }
}

function count(text, needle) {
  return text.split(needle).length - 1;
}

/** The captured output of a cell, for a look after a failure. */
function saveArtifact(fault, text) {
  mkdirSync(ARTIFACTS, { recursive: true });
  writeFileSync(`${ARTIFACTS}/chaos-browser-${fault}.txt`, text);
}

// ---- the daemon and the proxy -----------------------------------------------

/**
 * Runs `tether serve` on a free port with a short keepalive and a fresh
 * token; resolves once it listens. `nextListening()` resolves at the next
 * "listening" line (a restart prints it again), with the time it was read.
 */
function startDaemon() {
  const token = randomBytes(24).toString('hex');
  const args = ['serve', '--listen', '127.0.0.1:0', '--peer-timeout', String(PEER_TIMEOUT_S), '--ping-interval', String(PING_INTERVAL_S)];
  const child = spawn(BIN, args, {
    env: { ...process.env, TETHER_TOKEN: token, TETHER_LOG: process.env.TETHER_LOG || 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const waiters = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    const m = line.match(/tether: listening on (http:\/\/\S+)/);
    if (m) for (const w of waiters.splice(0)) w({ at: Date.now(), url: m[1] });
  });
  const nextListening = () =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the daemon did not listen within ${WAIT_MS} ms\n${stderr}`)), WAIT_MS);
      waiters.push((l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
  const early = new Promise((_, reject) =>
    child.once('exit', (code) => reject(new Error(`the daemon exited (${code}) before listening\n${stderr}`))),
  );
  early.catch(() => {});
  return Promise.race([nextListening(), early]).then(
    ({ url }) => ({
      url,
      addr: url.replace(/^http:\/\//, ''),
      token,
      pid: child.pid,
      nextListening,
      /** SIGTERM (the daemon kills its commands), SIGKILL if it lingers. */
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const late = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(late);
      },
    }),
    (e) => {
      child.kill('SIGKILL');
      throw e;
    },
  );
}

/**
 * Runs `tether-faultproxy` in front of `upstream`; `cmd(line)` sends it
 * one command and resolves with its one-line answer.
 */
function startProxy(upstream) {
  const child = spawn(PROXY_BIN, [upstream], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const waiters = [];
  createInterface({ input: child.stdout }).on('line', (line) => waiters.shift()?.(line));
  const next = (what) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the proxy did not answer ${what} within 5 s\n${stderr}`)), 5000);
      waiters.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
  child.once('error', (e) => waiters.splice(0).forEach((w) => w(`error: ${e.message}`)));
  return next('at start').then((line) => {
    const m = line.match(/^listening on (\S+)/);
    if (!m) {
      child.kill('SIGKILL');
      throw new Error(`the proxy said ${JSON.stringify(line)}\n${stderr}`);
    }
    return {
      url: `http://${m[1]}`,
      async cmd(command) {
        const answer = next(command);
        child.stdin.write(`${command}\n`);
        const line = await answer;
        if (line.startsWith('error')) throw new Error(`proxy ${command}: ${line}`);
        return line;
      },
      /** EOF on its stdin ends it; SIGKILL if it lingers. */
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.stdin.end();
        const late = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(late);
      },
    };
  });
}
