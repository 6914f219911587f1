// TetherConnection and TerminalSession against a scripted fake daemon: the
// token stays out of the URL, output is written exactly once across a
// reconnect, a gap asks for a clean screen, keystrokes wait for the link.
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { test } from 'node:test';

import { TerminalSession, TetherConnection, decodeMessage, encodeMessage } from '../src/protocol.js';

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
  assert.deepEqual(start.spec, { argv: ['/bin/bash', '-l'], pty: { rows: 24, cols: 80 } });
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
