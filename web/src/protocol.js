// The tether wire protocol (protocol/PROTOCOL.md) for browsers: MessagePack
// frames on subprotocol `tether.v1`, one multiplexed connection that
// reconnects on its own, and a terminal session that resumes a command's
// output by absolute offset so that no byte is written to the terminal twice,
// and numbers its keystrokes so that none is lost or typed twice either.
//
// No DOM here: the WebSocket class is injectable so Node tests can drive it.

import { decode as mpDecode, encode as mpEncode } from '@msgpack/msgpack';

export const SUBPROTOCOL = 'tether.v1';
export const TOKEN_SUBPROTOCOL_PREFIX = 'tether.token.';

/** Backoff between reconnect attempts (section 11): 100 ms doubling to 5 s. */
export const BACKOFF_MIN_MS = 100;
export const BACKOFF_MAX_MS = 5000;
/** A connection on which nothing arrived for this long is dead (section 12). */
export const SILENCE_MS = 45_000;
/**
 * Browsers answer the daemon's pings without telling the page, so an idle
 * but healthy connection looks silent to us. After this long without a frame
 * we send a cheap request (`list`) whose reply proves the connection alive.
 */
export const PROBE_MS = 15_000;
/** Unacknowledged stdin bytes we keep in flight (the daemon allows 4 MiB). */
export const STDIN_WINDOW = 1 << 20;
/** Largest stdin payload per frame (well below max_frame_bytes). */
export const STDIN_CHUNK = 64 << 10;

/**
 * A random name with `prefix` (section 9): `w-` names a writer of numbered
 * stdin, `k-` a start's request key. 64 random bits make two pages (or two
 * sessions of one page) that pick the same name vanishingly unlikely.
 */
export function randomName(prefix, bytes = 8) {
  const b = globalThis.crypto.getRandomValues(new Uint8Array(bytes));
  return prefix + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** Encodes one message as a MessagePack map (named fields, `bin` payloads). */
export function encodeMessage(msg) {
  // Unset optional fields are omitted rather than sent as nil.
  return mpEncode(msg, { ignoreUndefined: true });
}

/**
 * Decodes one MessagePack frame. u64 values become numbers: exact below
 * 2^53, which no offset or id reaches in practice (PROTOCOL.md section 1).
 */
export function decodeMessage(bytes) {
  const msg = mpDecode(bytes, { useBigInt64: false });
  if (msg === null || typeof msg !== 'object' || typeof msg.type !== 'string') {
    throw new Error('frame is not a message (a map with a string "type")');
  }
  return msg;
}

/** A request answered by `error`: `code` is the protocol's error code. */
export class TetherError extends Error {
  constructor(code, message, errno) {
    super(message);
    this.name = 'TetherError';
    this.code = code;
    this.errno = errno ?? null;
  }
}

/** The smallest event emitter: `on(name, fn)` returns an unsubscribe function. */
class Emitter {
  #handlers = new Map();
  on(name, fn) {
    if (!this.#handlers.has(name)) this.#handlers.set(name, new Set());
    this.#handlers.get(name).add(fn);
    return () => this.#handlers.get(name)?.delete(fn);
  }
  emit(name, ...args) {
    for (const fn of this.#handlers.get(name) ?? []) {
      try {
        fn(...args);
      } catch (e) {
        console.error(`tether: ${name} handler failed`, e);
      }
    }
  }
}

/**
 * The WebSocket URL next to the page that was served (`v1/ws` relative to
 * it, so a reverse proxy may mount the daemon under a path).
 */
export function defaultUrl(loc = globalThis.location) {
  const u = new URL('v1/ws', loc.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.search = '';
  u.hash = '';
  return u.href;
}

/**
 * One multiplexed connection to the daemon, kept alive across network losses.
 *
 * States (event `state`): `connecting` (first attempt), `connected` (hello
 * received), `reconnecting` (lost, retrying with backoff), `closed` (by
 * `close()` or a refused first attempt; final).
 * Events: `state(state, detail)`, `hello(msg)`, `frame(msg)` for non-reply
 * frames, and `connected()` after every hello, when sessions re-attach.
 */
export class TetherConnection extends Emitter {
  /**
   * @param {object} opts
   * @param {string} opts.url `ws(s)://host/v1/ws`
   * @param {string} opts.token the bearer token; sent only as a subprotocol entry
   * @param {typeof WebSocket} [opts.WebSocket] the WebSocket class (tests inject one)
   * @param {number} [opts.silenceMs] a connection silent this long is dead (a
   *   daemon with a short `--peer-timeout` wants a short one here too)
   * @param {number} [opts.probeMs] silence after which we probe with a request
   */
  constructor({ url, token, WebSocket: WS = globalThis.WebSocket, silenceMs = SILENCE_MS, probeMs = PROBE_MS }) {
    super();
    this.url = url;
    this.WS = WS;
    this.token = token;
    this.silenceMs = silenceMs;
    this.probeMs = probeMs;
    this.state = 'closed';
    this.hello = null;
    /**
     * Bumped at every hello: which connection a request went out on, so a
     * session can tell its stdin frames lost with an old one from those in
     * flight on this one.
     */
    this.generation = 0;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // request id -> { resolve, reject }
    this.sessions = new Map(); // command id -> TerminalSession
    this.backoff = BACKOFF_MIN_MS;
    this.everConnected = false;
    this.timers = { reconnect: null, silence: null, probe: null };
  }

  /** Starts connecting; resolves on the first hello, rejects if that attempt fails. */
  open() {
    this.#setState('connecting');
    return new Promise((resolve, reject) => {
      const offState = this.on('state', (state, detail) => {
        if (state === 'connected') {
          offState();
          resolve(this.hello);
        } else if (state === 'closed') {
          offState();
          reject(new Error(detail || 'connection closed'));
        }
      });
      this.#connect();
    });
  }

  /** Closes for good: no reconnect; pending requests fail. */
  close() {
    this.#clearTimers();
    this.#detach(1000);
    this.#failPending('connection closed');
    this.#setState('closed');
  }

  /**
   * Forcibly drops the current socket as a network loss would (for tests):
   * the connection then reconnects and resumes, not before `downMs`.
   */
  dropConnection(downMs = 0) {
    if (this.ws) this.#lost(1006, 'dropped', downMs);
  }

  /**
   * Sends a request and resolves with its reply; an `error` reply rejects
   * with TetherError. A request made while not connected, or whose
   * connection is lost before the reply, rejects with code `disconnected`:
   * whether the daemon acted on it is unknown.
   */
  request(msg) {
    // A socket the daemon is closing (a restart's 1001) is still
    // `connected` until its close event: a send there would be dropped
    // (with a console error), so the request fails as disconnected now and
    // is repeated, where safe, after the reconnect.
    if (this.state !== 'connected' || this.#closing()) {
      return Promise.reject(new TetherError('disconnected', 'not connected'));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.#send({ ...msg, id });
    });
  }

  /**
   * Like `request`, for a request that is safe to send twice (a keyed
   * `start`, `status`, `list`...): when it fails with `disconnected`, waits
   * for the reconnect and sends it again, until it gets a reply or the
   * connection is closed for good. A request sent while disconnected thus
   * goes out once the link is back rather than failing. `abandon()`, asked
   * before each new attempt, gives up (with the `disconnected` error) when
   * the answer is no longer wanted.
   */
  async requestAgain(msg, abandon = () => false) {
    for (;;) {
      try {
        return await this.request(msg);
      } catch (e) {
        if (!(e instanceof TetherError) || e.code !== 'disconnected') throw e;
        await this.whenConnected();
        if (abandon()) throw e;
      }
    }
  }

  /** Resolves at once if connected, else at the next hello; rejects once closed for good. */
  whenConnected() {
    if (this.state === 'connected') return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(new TetherError('disconnected', 'connection closed'));
    return new Promise((resolve, reject) => {
      const off = this.on('state', (state, detail) => {
        if (state === 'connected') {
          off();
          resolve();
        } else if (state === 'closed') {
          off();
          reject(new TetherError('disconnected', detail || 'connection closed'));
        }
      });
    });
  }

  #send(msg) {
    if (!this.#closing()) this.ws.send(encodeMessage(msg));
  }

  /** The socket is closing or closed (WebSocket CLOSING = 2, CLOSED = 3). */
  #closing() {
    return !this.ws || (typeof this.ws.readyState === 'number' && this.ws.readyState >= 2);
  }

  #connect() {
    this.timers.reconnect = null;
    let ws;
    try {
      ws = new this.WS(this.url, [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + this.token]);
    } catch (e) {
      this.#lost(1006, String(e));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onmessage = (ev) => this.#onMessage(ev.data);
    ws.onclose = (ev) => this.#lost(ev.code, ev.reason);
    // An error is always followed by close; close does the work.
    ws.onerror = () => {};
    this.#armWatchdog();
  }

  #onMessage(data) {
    this.#armWatchdog();
    if (typeof data === 'string') return; // we never asked for JSON
    let msg;
    try {
      msg = decodeMessage(new Uint8Array(data));
    } catch (e) {
      console.warn('tether: undecodable frame', e);
      return;
    }
    if (msg.type === 'hello') {
      this.hello = msg;
      this.generation++;
      this.backoff = BACKOFF_MIN_MS;
      this.everConnected = true;
      this.#setState('connected');
      this.emit('hello', msg);
      this.emit('connected');
      return;
    }
    // Replies carry the request id; output, screen, gap, resized and exit do not.
    if (msg.id != null && this.pending.has(msg.id)) {
      const { resolve, reject } = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.type === 'error') reject(new TetherError(msg.code, msg.message, msg.errno));
      else resolve(msg);
      return;
    }
    if (msg.command != null) this.sessions.get(msg.command)?.handle(msg);
    this.emit('frame', msg);
  }

  /** The socket is gone (closed by the peer, the network, or us): reconnect. */
  #lost(code, reason, minDelayMs = 0) {
    this.#detach();
    this.#failPending(`connection lost (${code}${reason ? ': ' + reason : ''})`);
    if (this.state === 'closed') return;
    if (!this.everConnected) {
      // The browser hides the HTTP status of a refused upgrade; the first
      // attempt failing means a wrong token or an unreachable daemon.
      this.#clearTimers();
      this.#setState('closed', 'could not connect (wrong token or daemon unreachable)');
      return;
    }
    this.#setState('reconnecting', `${code}${reason ? ' ' + reason : ''}`);
    // 1001: the daemon is restarting, come back at once (section 11).
    const delay = Math.max(code === 1001 ? 0 : this.backoff, minDelayMs);
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => this.#connect(), delay);
  }

  /**
   * Unhooks and closes the current socket so its late events are ignored.
   * Without `code` the close frame has no status (as after a network loss).
   */
  #detach(code) {
    const ws = this.ws;
    this.ws = null;
    clearTimeout(this.timers.silence);
    clearTimeout(this.timers.probe);
    if (!ws) return;
    ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      if (code) ws.close(code);
      else ws.close();
    } catch {
      // Already closing, or never opened.
    }
  }

  #failPending(why) {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(new TetherError('disconnected', why));
  }

  /** (Re)arms the probe and silence timers; called on every received frame. */
  #armWatchdog() {
    clearTimeout(this.timers.silence);
    clearTimeout(this.timers.probe);
    const ws = this.ws;
    this.timers.probe = setTimeout(() => {
      if (this.ws === ws && this.state === 'connected') this.request({ type: 'list' }).catch(() => {});
    }, this.probeMs);
    // Also bounds a connection attempt the network swallows (no hello).
    this.timers.silence = setTimeout(() => {
      if (this.ws === ws) this.#lost(1006, `silent for ${this.silenceMs / 1000} s`);
    }, this.silenceMs);
  }

  #clearTimers() {
    for (const t of Object.values(this.timers)) clearTimeout(t);
  }

  #setState(state, detail = '') {
    if (this.state === state && state !== 'reconnecting') return;
    this.state = state;
    this.emit('state', state, detail);
  }
}

/**
 * One command shown in one terminal: starts or attaches to it, writes its
 * output exactly once and in order, forwards keystrokes exactly once and in
 * order (numbered stdin, section 9 *Resuming stdin*) and sizes, and
 * re-attaches after every reconnect.
 *
 * Events: `opened({command, pty})` (started or attached; before any data),
 * `reset(size)` (clear the terminal before a screen), `data(Uint8Array)`,
 * `resized({rows, cols})`, `gap({stream, lost})`, `exit(status)`,
 * `error(TetherError)`, `ended()` (the command is gone: exited or not found).
 */
export class TerminalSession extends Emitter {
  /**
   * A session on `conn` for a terminal of `size` ({rows, cols}). Subscribe
   * to its events, then call `start` or `attach` once.
   */
  constructor(conn, size) {
    super();
    this.conn = conn;
    /** The command id, once started or attached. */
    this.command = null;
    /** Whether the command runs on a PTY (then stderr is empty and screens exist). */
    this.pty = false;
    /** This viewer's terminal size, sent with every attach. */
    this.size = size;
    /** Per stream, the offset one past the last byte written to the terminal. */
    this.next = { stdout: 0, stderr: 0 };
    /** After a gap we re-attach for a screen; output until it arrives is stale. */
    this.awaitingScreen = false;
    this.ended = false;
    /** Our stdin's writer name: the daemon counts the bytes it took from it. */
    this.writer = randomName('w-');
    /** How many stdin bytes this writer has numbered: the next frame's offset. */
    this.stdinOffset = 0;
    /**
     * Every stdin frame not yet acknowledged, in offset order: `{offset,
     * data, sentOn}`, where `sentOn` is the connection generation it last
     * went out on (0: not yet). A frame leaves only with its `ok`, so one
     * lost with a connection is sent again, with the same offset, on the
     * next; the daemon drops whatever part of it had arrived.
     */
    this.stdinFrames = [];
    /** During a re-attach keystrokes wait, so they go out after the resends. */
    this.stdinHeld = false;
    this.offConnected = conn.on('connected', () => this.#resume());
  }

  /**
   * Starts a new PTY command of this terminal's size and shows it. `spec` is
   * a StartSpec (section 8) without `pty`.
   *
   * The start carries a request key, so when the connection is lost before
   * the reply (did the command start or not?) the same request is sent
   * again after the reconnect: the daemon answers with the command the
   * first one started, if it did, and one click makes one command. A
   * session closed meanwhile does not ask again.
   */
  async start(spec) {
    const { rows, cols } = this.size;
    const request_key = spec.request_key ?? randomName('k-', 16);
    const msg = { type: 'start', spec: { ...spec, pty: { rows, cols }, request_key } };
    const reply = await this.conn.requestAgain(msg, () => this.ended);
    // `started` is the attachment (from offset 0, no screen). Output follows
    // it in later frames; this continuation runs in a microtask, before the
    // next frame is handled, so none is missed.
    this.#register(reply.command, true);
    return reply.command;
  }

  /** Attaches to an existing command: a fresh screen for a PTY, the held history otherwise. */
  async attach(command) {
    const { info } = await this.conn.requestAgain({ type: 'status', command }, () => this.ended);
    if (this.ended) throw new TetherError('closed', 'session closed');
    this.#register(command, info.pty != null);
    try {
      await this.#attach(true);
    } catch (e) {
      // Lost with the connection: registered, we re-attach after the reconnect.
      if (e.code === 'disconnected') return info;
      this.close();
      throw e;
    }
    return info;
  }

  #register(command, pty) {
    this.command = command;
    this.pty = pty;
    if (this.ended) {
      // Closed while the request was in flight: the daemon attached us anyway.
      this.conn.request({ type: 'detach', command }).catch(() => {});
      throw new TetherError('closed', 'session closed');
    }
    this.conn.sessions.set(command, this);
    this.emit('opened', { command, pty });
  }

  /**
   * Forwards keystrokes (bytes), in order, within the stdin window. Bytes
   * given while disconnected wait for the reconnect; none is lost or typed
   * twice by a connection loss.
   */
  sendStdin(bytes) {
    if (this.ended || this.command == null || bytes.length === 0) return;
    for (let i = 0; i < bytes.length; i += STDIN_CHUNK) {
      const data = bytes.subarray(i, i + STDIN_CHUNK);
      this.stdinFrames.push({ offset: this.stdinOffset, data, sentOn: 0 });
      this.stdinOffset += data.length;
    }
    this.#pumpStdin();
  }

  /** Sets the PTY's size (this viewer's terminal was resized). */
  resize(size) {
    this.size = size;
    if (!this.pty || this.ended || this.conn.state !== 'connected') return;
    this.conn.request({ type: 'resize', command: this.command, size }).catch((e) => this.#error(e));
  }

  /** Simulates a network loss of at least `downMs` (tests). */
  dropConnection(downMs = 0) {
    this.conn.dropConnection(downMs);
  }

  /** Stops showing the command (it keeps running). */
  close() {
    this.offConnected();
    const wasEnded = this.ended;
    this.ended = true;
    this.stdinFrames = [];
    if (this.command == null) return;
    if (this.conn.sessions.get(this.command) === this) this.conn.sessions.delete(this.command);
    if (!wasEnded && this.conn.state === 'connected') {
      this.conn.request({ type: 'detach', command: this.command }).catch(() => {});
    }
  }

  /** A non-reply frame for this command, from the connection. */
  handle(msg) {
    if (this.ended) return;
    switch (msg.type) {
      case 'screen':
        // The screen replaces whatever the terminal shows: reset, draw, and
        // continue with output from the offset the screen reflects.
        this.awaitingScreen = false;
        this.next.stdout = msg.offset;
        this.emit('reset', msg.size);
        this.emit('data', msg.data);
        break;
      case 'output':
        this.#output(msg.stream, msg.offset, msg.data);
        break;
      case 'gap':
        this.#gap(msg.stream, msg.first_held);
        break;
      case 'resized':
        this.emit('resized', msg.size);
        break;
      case 'exit':
        this.emit('exit', msg.status);
        this.#end();
        break;
      default:
        break; // unknown server frames are ignored (section 3)
    }
  }

  /** Delivers the part of a chunk past `next` (section 9). */
  #output(stream, offset, data) {
    if (this.awaitingScreen) return;
    const next = this.next[stream];
    const end = offset + data.length;
    if (end <= next) return; // already written
    if (offset > next) {
      // Bytes missing without a gap notice: a bug somewhere. Re-attach from
      // what we have rather than show a torn stream.
      console.warn(`tether: ${stream} jumped from ${next} to ${offset}; re-attaching`);
      this.#attach(this.pty).catch((e) => this.#error(e));
      return;
    }
    this.next[stream] = end;
    this.emit('data', offset < next ? data.subarray(next - offset) : data);
  }

  #gap(stream, firstHeld) {
    if (this.pty) {
      // A torn terminal stream is worse than none: ask for a clean screen
      // (section 14) and ignore output until it comes.
      if (!this.awaitingScreen) {
        this.awaitingScreen = true;
        this.#attach(true, 0).catch((e) => this.#error(e));
      }
      return;
    }
    if (firstHeld > this.next[stream]) {
      this.emit('gap', { stream, lost: firstHeld - this.next[stream] });
      this.next[stream] = firstHeld;
    }
  }

  /**
   * Attaches (or re-attaches) this connection. With `screen` a PTY command
   * answers with its current screen, unless `stdout_offset` is non-zero and
   * still held, in which case the raw bytes resume from there.
   */
  async #attach(screen, stdoutOffset = this.next.stdout) {
    const msg = {
      type: 'attach',
      command: this.command,
      stdout_offset: stdoutOffset,
      stderr_offset: this.next.stderr,
    };
    if (this.pty) {
      msg.screen = screen;
      msg.size = this.size;
    }
    await this.conn.request(msg);
  }

  /**
   * After a reconnect: re-attach where we are, then send again the stdin
   * frames not acknowledged (their `ok` died with the old socket) and the
   * keystrokes typed meanwhile, in order.
   */
  #resume() {
    if (this.ended || this.command == null) return;
    this.stdinHeld = true;
    const offset = this.awaitingScreen ? 0 : this.next.stdout;
    this.#attach(this.pty, offset).then(
      () => {
        this.stdinHeld = false;
        this.#pumpStdin();
      },
      (e) => {
        this.stdinHeld = false;
        if (e.code === 'not_found') this.#end();
        else this.#pumpStdin();
        this.#error(e);
      },
    );
  }

  /**
   * Sends, in offset order, every frame not yet sent on this connection,
   * while less than STDIN_WINDOW bytes are unacknowledged on it. Frames
   * sent on this connection form a prefix of the list (we send in order and
   * remove only on `ok`), so the first frame not sent here is the oldest
   * one the daemon may lack: no later byte ever overtakes it.
   */
  #pumpStdin() {
    if (this.ended || this.stdinHeld || this.conn.state !== 'connected') return;
    const generation = this.conn.generation;
    let inFlight = 0;
    for (const frame of this.stdinFrames) {
      if (inFlight >= STDIN_WINDOW) break;
      inFlight += frame.data.length;
      if (frame.sentOn === generation) continue;
      frame.sentOn = generation;
      const { offset, data } = frame;
      this.conn.request({ type: 'stdin', command: this.command, data, writer: this.writer, offset }).then(
        () => {
          this.#forget(frame);
          this.#pumpStdin();
        },
        (e) => {
          // Lost with the connection: the frame stays and goes again (with
          // its offset, so the daemon drops what it already has). Any other
          // error is final for these bytes (the command ended, stdin closed).
          if (e.code === 'disconnected') return;
          this.#forget(frame);
          this.#error(e);
        },
      );
    }
  }

  #forget(frame) {
    const i = this.stdinFrames.indexOf(frame);
    if (i >= 0) this.stdinFrames.splice(i, 1);
  }

  #error(e) {
    if (e.code === 'disconnected') return; // the reconnect takes care of it
    this.emit('error', e);
  }

  #end() {
    if (this.ended) return;
    this.ended = true;
    this.stdinFrames = [];
    this.offConnected();
    if (this.conn.sessions.get(this.command) === this) this.conn.sessions.delete(this.command);
    this.emit('ended');
  }
}
