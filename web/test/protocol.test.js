// TetherConnection and TerminalSession against a scripted fake daemon: the
// token stays out of the URL, output is written exactly once across a
// reconnect, a gap asks for a clean screen, keystrokes wait for the link and
// are numbered so that none is lost or typed twice by a reconnect, a start
// lost with its connection is sent again with the same key, the watchdog's
// timers are the caller's.
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { test } from 'node:test';

import { STDIN_CHUNK, STDIN_WINDOW, TerminalSession, TetherConnection, decodeMessage, encodeMessage } from '../src/protocol.js';

const HELLO = { type: 'hello', version: 1, server: 'fake', limits: {} };
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A WebSocket double: records what the page sends, lets the test play the daemon. */
class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.closed = false;
    FakeSocket.all.push(this);
  }
  send(bytes) {
    this.sent.push(decodeMessage(bytes));
  }
  close() {
    this.closed = true;
  }
  /** The daemon sends `msg` (delivered in its own task, as a browser does). */
  async push(msg) {
    this.onmessage({ data: encodeMessage(msg).slice().buffer });
    await tick();
  }
  /** The last request of `type` the page sent. */
  last(type) {
    return this.sent.findLast((m) => m.type === type);
  }
  /** Every request of `type` the page sent, in order. */
  all(type) {
    return this.sent.filter((m) => m.type === type);
  }
  /** The daemon answers request `msg` with `ok`. */
  ok(msg) {
    return this.push({ type: 'ok', id: msg.id });
  }
  static latest() {
    return FakeSocket.all.at(-1);
  }
}

async function until(what, cond, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A connected connection plus a session started on it, recording what it writes. */
async function startedSession() {
  const conn = new TetherConnection({ url: 'ws://h/v1/ws', token: 'sekrit', WebSocket: FakeSocket });
  const opened = conn.open();
  const ws = FakeSocket.latest();
  await ws.push(HELLO);
  await opened;
  const session = new TerminalSession(conn, { rows: 24, cols: 80 });
  const log = { text: '', resets: 0, exit: null };
  session.on('data', (d) => (log.text += dec.decode(d)));
  session.on('reset', () => log.resets++);
  session.on('exit', (s) => (log.exit = s));
  const started = session.start({ argv: ['/bin/bash', '-l'] });
  await tick();
  const start = ws.last('start');
  await ws.push({ type: 'started', id: start.id, command: 'c-1', pid: 42 });
  await started;
  return { conn, session, ws, log, start };
}

test('the token goes in the subprotocol list only', async (t) => {
  const { conn, ws, start } = await startedSession();
  t.after(() => conn.close());
  assert.equal(ws.url, 'ws://h/v1/ws');
  assert.deepEqual(ws.protocols, ['tether.v1', 'tether.token.sekrit']);
  const { request_key, ...spec } = start.spec;
  assert.deepEqual(spec, { argv: ['/bin/bash', '-l'], pty: { rows: 24, cols: 80 } });
  assert.match(request_key, /^k-[0-9a-f]{32}$/);
});

test('overlapping output is written once; a reconnect resumes at the next offset', async (t) => {
  const { conn, session, ws, log } = await startedSession();
  t.after(() => conn.close());
  const out = (offset, s) => ws.push({ type: 'output', command: 'c-1', stream: 'stdout', offset, data: enc.encode(s) });
  await out(0, 'abc');
  await out(1, 'bcde'); // overlap: only "de" is new
  await out(0, 'ab'); // duplicate
  assert.equal(log.text, 'abcde');
  assert.equal(session.next.stdout, 5);

  const states = [];
  conn.on('state', (s) => states.push(s));
  session.dropConnection();
  assert.equal(conn.state, 'reconnecting');
  session.sendStdin(enc.encode('typed while away'));
  await until('a new socket', () => FakeSocket.latest() !== ws);
  const ws2 = FakeSocket.latest();
  await ws2.push(HELLO);
  const attach = ws2.last('attach');
  assert.deepEqual(
    { ...attach, id: 0 },
    { type: 'attach', id: 0, command: 'c-1', stdout_offset: 5, stderr_offset: 0, screen: true, size: { rows: 24, cols: 80 } },
  );
  assert.equal(ws2.last('stdin'), undefined, 'keystrokes wait for the re-attach');
  await ws2.push({ type: 'attached', id: attach.id, command: 'c-1', stdout_offset: 5, stderr_offset: 0 });
  await until('queued stdin', () => ws2.last('stdin'));
  assert.equal(dec.decode(ws2.last('stdin').data), 'typed while away');
  await ws2.push({ type: 'output', command: 'c-1', stream: 'stdout', offset: 3, data: enc.encode('defg') });
  assert.equal(log.text, 'abcdefg');
  assert.equal(log.resets, 0);
  assert.deepEqual(states, ['reconnecting', 'connected']);
});

test('a gap asks for a clean screen and ignores output until it comes', async (t) => {
  const { conn, session, ws, log } = await startedSession();
  t.after(() => conn.close());
  await ws.push({ type: 'output', command: 'c-1', stream: 'stdout', offset: 0, data: enc.encode('old') });
  await ws.push({ type: 'gap', command: 'c-1', stream: 'stdout', requested: 3, first_held: 100 });
  const attach = ws.last('attach');
  assert.equal(attach.stdout_offset, 0);
  assert.equal(attach.screen, true);
  await ws.push({ type: 'output', command: 'c-1', stream: 'stdout', offset: 100, data: enc.encode('torn') });
  await ws.push({ type: 'attached', id: attach.id, command: 'c-1', stdout_offset: 0, stderr_offset: 0 });
  await ws.push({ type: 'screen', command: 'c-1', offset: 200, size: { rows: 24, cols: 80 }, data: enc.encode('SCREEN') });
  await ws.push({ type: 'output', command: 'c-1', stream: 'stdout', offset: 200, data: enc.encode('!') });
  assert.equal(log.text, 'oldSCREEN!');
  assert.equal(log.resets, 1);
  assert.equal(session.next.stdout, 201);
});

test('exit ends the session: no re-attach after a reconnect', async (t) => {
  const { conn, session, ws, log } = await startedSession();
  t.after(() => conn.close());
  await ws.push({ type: 'exit', command: 'c-1', status: { code: 0, reason: 'exited' } });
  assert.equal(log.exit.code, 0);
  assert.ok(session.ended);
  conn.dropConnection();
  await until('a new socket', () => FakeSocket.latest() !== ws);
  await FakeSocket.latest().push(HELLO);
  assert.equal(FakeSocket.latest().last('attach'), undefined);
});

test('a first connection that fails is closed, not retried', async () => {
  const conn = new TetherConnection({ url: 'ws://h/v1/ws', token: 'wrong', WebSocket: FakeSocket });
  const opened = conn.open();
  FakeSocket.latest().onclose({ code: 1006, reason: '' });
  await assert.rejects(opened, /could not connect/);
  assert.equal(conn.state, 'closed');
});

/** Drops `conn`'s socket and plays the daemon's side of the reconnect up to its hello. */
async function reconnect(conn, old) {
  conn.dropConnection();
  await until('a new socket', () => FakeSocket.latest() !== old);
  const ws = FakeSocket.latest();
  await ws.push(HELLO);
  return ws;
}

/** Answers the re-attach that follows a reconnect. */
async function reattached(ws) {
  const attach = ws.last('attach');
  assert.ok(attach, 'the session re-attaches');
  await ws.push({ type: 'attached', id: attach.id, command: 'c-1', stdout_offset: attach.stdout_offset, stderr_offset: 0 });
}

/** The stdin frames sent on `ws` as [offset, text] pairs, in order. */
const stdinOn = (ws) => ws.all('stdin').map((m) => [m.offset, dec.decode(m.data)]);

test('stdin frames carry the session writer and their offset', async (t) => {
  const { conn, session, ws } = await startedSession();
  t.after(() => conn.close());
  session.sendStdin(enc.encode('ls'));
  session.sendStdin(enc.encode(' -l\r'));
  const [a, b] = ws.all('stdin');
  assert.match(a.writer, /^w-[0-9a-f]{16}$/);
  assert.equal(b.writer, a.writer);
  assert.deepEqual(stdinOn(ws), [
    [0, 'ls'],
    [2, ' -l\r'],
  ]);
  assert.equal(a.command, 'c-1');
  // Another session (another tab) is another writer.
  const other = new TerminalSession(conn, { rows: 24, cols: 80 });
  assert.notEqual(other.writer, a.writer);
});

test('frames in flight at a drop are sent again, same offsets, before later keystrokes', async (t) => {
  const { conn, session, ws } = await startedSession();
  t.after(() => conn.close());
  session.sendStdin(enc.encode('ech'));
  session.sendStdin(enc.encode('o h'));
  session.sendStdin(enc.encode('i'));
  await ws.ok(ws.all('stdin')[0]); // only "ech" was written; "o h" and "i" are in flight

  conn.dropConnection();
  session.sendStdin(enc.encode('\r')); // typed while disconnected
  await until('a new socket', () => FakeSocket.latest() !== ws);
  const ws2 = FakeSocket.latest();
  await ws2.push(HELLO);
  session.sendStdin(enc.encode('!')); // typed during the re-attach
  assert.deepEqual(stdinOn(ws2), [], 'keystrokes wait for the re-attach');
  await reattached(ws2);
  assert.deepEqual(stdinOn(ws2), [
    [3, 'o h'],
    [6, 'i'],
    [7, '\r'],
    [8, '!'],
  ]);
  assert.ok(ws2.all('stdin').every((m) => m.writer === session.writer));
  // The attach went out before the resends.
  assert.ok(ws2.sent.indexOf(ws2.last('attach')) < ws2.sent.indexOf(ws2.all('stdin')[0]));

  // Acknowledged frames are forgotten: a second drop resends only the rest.
  for (const m of ws2.all('stdin').slice(0, 3)) await ws2.ok(m);
  const ws3 = await reconnect(conn, ws2);
  await reattached(ws3);
  assert.deepEqual(stdinOn(ws3), [[8, '!']]);
});

test('keystrokes typed while disconnected arrive once, in order', async (t) => {
  const { conn, session, ws } = await startedSession();
  t.after(() => conn.close());
  conn.dropConnection();
  for (const c of 'pwd\r') session.sendStdin(enc.encode(c));
  assert.deepEqual(stdinOn(ws), [], 'nothing goes to a dead socket');
  await until('a new socket', () => FakeSocket.latest() !== ws);
  const ws2 = FakeSocket.latest();
  await ws2.push(HELLO);
  await reattached(ws2);
  assert.deepEqual(stdinOn(ws2), [
    [0, 'p'],
    [1, 'w'],
    [2, 'd'],
    [3, '\r'],
  ]);
  for (const m of ws2.all('stdin')) await ws2.ok(m);
  session.sendStdin(enc.encode('x'));
  assert.deepEqual(stdinOn(ws2).at(-1), [4, 'x']);
  assert.equal(ws2.all('stdin').length, 5, 'each keystroke once');
});

test('keystrokes typed while the daemon is closing the socket go after the reconnect', async (t) => {
  const { conn, session, ws } = await startedSession();
  t.after(() => conn.close());
  // A restart's 1001 is on its way: the socket is closing, the page does
  // not know yet. A browser would drop (and log) a send on it.
  ws.readyState = 2;
  for (const c of 'ls\r') session.sendStdin(enc.encode(c));
  assert.deepEqual(stdinOn(ws), [], 'nothing sent on a closing socket');
  ws.onclose({ code: 1001, reason: 'restarting' });
  await until('a new socket', () => FakeSocket.latest() !== ws);
  const ws2 = FakeSocket.latest();
  await ws2.push(HELLO);
  await reattached(ws2);
  assert.deepEqual(stdinOn(ws2), [
    [0, 'l'],
    [1, 's'],
    [2, '\r'],
  ]);
});

test('the stdin window holds back frames, and counts resends', async (t) => {
  const { conn, session, ws } = await startedSession();
  t.after(() => conn.close());
  const frames = (2 * STDIN_WINDOW) / STDIN_CHUNK;
  session.sendStdin(new Uint8Array(2 * STDIN_WINDOW));
  const inWindow = STDIN_WINDOW / STDIN_CHUNK;
  assert.equal(ws.all('stdin').length, inWindow);
  await ws.ok(ws.all('stdin')[0]);
  assert.equal(ws.all('stdin').length, inWindow + 1, 'one ok, one more frame');

  const ws2 = await reconnect(conn, ws);
  await reattached(ws2);
  const resent = ws2.all('stdin');
  assert.equal(resent.length, inWindow, 'a window again, from the oldest unacknowledged frame');
  assert.deepEqual(
    resent.map((m) => m.offset),
    Array.from({ length: inWindow }, (_, i) => (i + 1) * STDIN_CHUNK),
  );
  for (const m of resent) await ws2.ok(m);
  assert.equal(ws2.all('stdin').at(-1).offset, (frames - 1) * STDIN_CHUNK, 'the rest follows');
});

test('a stdin error other than a lost connection drops those bytes only', async (t) => {
  const { conn, session, ws } = await startedSession();
  t.after(() => conn.close());
  const errors = [];
  session.on('error', (e) => errors.push(e.code));
  session.sendStdin(enc.encode('a'));
  await ws.push({ type: 'error', id: ws.last('stdin').id, code: 'stdin_closed', message: 'closed' });
  assert.deepEqual(errors, ['stdin_closed']);
  const ws2 = await reconnect(conn, ws);
  await reattached(ws2);
  assert.deepEqual(stdinOn(ws2), [], 'refused bytes are not resent');
});

test('a start in flight at a drop is sent again with the same request key', async (t) => {
  const conn = new TetherConnection({ url: 'ws://h/v1/ws', token: 't', WebSocket: FakeSocket });
  t.after(() => conn.close());
  const opened = conn.open();
  const ws = FakeSocket.latest();
  await ws.push(HELLO);
  await opened;
  const session = new TerminalSession(conn, { rows: 24, cols: 80 });
  let text = '';
  session.on('data', (d) => (text += dec.decode(d)));
  const started = session.start({ argv: ['/bin/bash'] });
  await tick();
  const first = ws.last('start');
  assert.match(first.spec.request_key, /^k-/);

  // The reply is lost with the connection: did the command start? Ask again.
  const ws2 = await reconnect(conn, ws);
  await until('the start again', () => ws2.last('start'));
  const again = ws2.last('start');
  assert.deepEqual(again.spec, first.spec);
  assert.equal(ws2.all('start').length, 1);
  assert.equal(ws2.last('attach'), undefined, 'nothing to re-attach yet');
  await ws2.push({ type: 'started', id: again.id, command: 'c-1', pid: 42 });
  assert.equal(await started, 'c-1');
  // The repeated start attaches from offset 0, like the first.
  await ws2.push({ type: 'output', command: 'c-1', stream: 'stdout', offset: 0, data: enc.encode('$ ') });
  assert.equal(text, '$ ');

  // A start asked for while disconnected waits for the link, then goes once.
  conn.dropConnection();
  const later = new TerminalSession(conn, { rows: 24, cols: 80 }).start({ argv: ['/bin/sh'] });
  await until('a new socket', () => FakeSocket.latest() !== ws2);
  const ws3 = FakeSocket.latest();
  assert.equal(ws3.last('start'), undefined);
  await ws3.push(HELLO);
  await until('the waiting start', () => ws3.last('start'));
  assert.notEqual(ws3.last('start').spec.request_key, first.spec.request_key, 'a new start has a new key');
  await ws3.push({ type: 'started', id: ws3.last('start').id, command: 'c-2', pid: 43 });
  assert.equal(await later, 'c-2');
});

test('a start lost with its connection is not repeated for a closed session', async (t) => {
  const { conn, ws } = await startedSession();
  t.after(() => conn.close());
  const session = new TerminalSession(conn, { rows: 24, cols: 80 });
  const failed = session.start({ argv: ['/bin/sh'] }).then(
    () => null,
    (e) => e,
  );
  await tick();
  conn.dropConnection();
  session.close(); // the user opened something else meanwhile
  await until('a new socket', () => FakeSocket.latest() !== ws);
  const ws2 = FakeSocket.latest();
  await ws2.push(HELLO);
  assert.equal((await failed)?.code, 'disconnected');
  assert.equal(ws2.last('start'), undefined);
});

test('an attach lost with its connection is made again after the reconnect', async (t) => {
  const { conn, ws } = await startedSession();
  t.after(() => conn.close());
  const session = new TerminalSession(conn, { rows: 24, cols: 80 });
  const attached = session.attach('c-9');
  await tick();
  const info = { command: 'c-9', pty: { rows: 30, cols: 100 } };
  await ws.push({ type: 'status', id: ws.last('status').id, info });
  assert.equal(ws.last('attach').command, 'c-9');
  const ws2 = await reconnect(conn, ws);
  assert.deepEqual(await attached, info, 'the attach does not fail for a lost connection');
  const again = ws2.last('attach');
  assert.deepEqual(
    { ...again, id: 0 },
    { type: 'attach', id: 0, command: 'c-9', stdout_offset: 0, stderr_offset: 0, screen: true, size: { rows: 24, cols: 80 } },
  );
});

test('a start refused by the daemon is not repeated', async (t) => {
  const { conn, ws } = await startedSession();
  t.after(() => conn.close());
  const session = new TerminalSession(conn, { rows: 24, cols: 80 });
  const failed = session.start({ argv: [] }).then(
    () => null,
    (e) => e,
  );
  await tick();
  await ws.push({ type: 'error', id: ws.last('start').id, code: 'bad_request', message: 'empty argv' });
  assert.equal((await failed)?.code, 'bad_request');
  assert.equal(ws.all('start').length, 2, 'the helper start and this one, once');
});

test('a silent connection is probed, then dropped, after the given times', async (t) => {
  const conn = new TetherConnection({ url: 'ws://h/v1/ws', token: 't', WebSocket: FakeSocket, silenceMs: 300, probeMs: 100 });
  t.after(() => conn.close());
  const opened = conn.open();
  const ws = FakeSocket.latest();
  const t0 = Date.now();
  await ws.push(HELLO);
  await opened;
  await until('a probe', () => ws.last('list'), 1000);
  await until('a reconnect', () => FakeSocket.latest() !== ws, 2000);
  const waited = Date.now() - t0;
  assert.ok(waited >= 300 && waited < 1500, `reconnected after ${waited} ms`);
  assert.ok(ws.closed);
  assert.equal(conn.state, 'reconnecting');
});
