// Every golden frame of protocol/vectors/ through the JS codec: the
// MessagePack file decodes to the same message as its JSON twin (byte
// payloads compared as bytes), and encoding it again gives the same bytes.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';

import { decodeMessage, encodeMessage } from '../src/protocol.js';

const dir = new URL('../../protocol/vectors/', import.meta.url);
const names = readdirSync(dir).filter((f) => f.endsWith('.msgpack') || f.endsWith('.json')).map((f) => f.replace(/\.(msgpack|json)$/, ''));
const cases = [...new Set(names)].sort();

const b64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));

/** The JSON encoding with its base64 payloads (PROTOCOL.md section 1) turned into bytes. */
function fromJson(msg) {
  const out = structuredClone(msg);
  if (typeof out.data === 'string') out.data = b64(out.data);
  if (typeof out.spec?.stdin === 'string') out.spec.stdin = b64(out.spec.stdin);
  return out;
}

test('the vectors directory has frames', () => {
  assert.ok(cases.length >= 20, `only ${cases.length} cases in ${dir}`);
  // Every frame in both forms (a lone file would be a case with a twin missing).
  const files = readdirSync(dir);
  for (const name of cases) {
    assert.ok(files.includes(`${name}.msgpack`) && files.includes(`${name}.json`), `${name}: both forms`);
  }
});

test('the fields the page sends for resumable stdin and keyed starts decode as it uses them', () => {
  const packed = (name) => decodeMessage(new Uint8Array(readFileSync(new URL(`${name}.msgpack`, dir))));
  const stdin = packed('client_stdin');
  assert.equal(typeof stdin.writer, 'string');
  // Past 2^32: MessagePack uint64, still an exact number.
  assert.equal(stdin.offset, 5368709120);
  const close = packed('client_close_stdin');
  assert.equal(close.writer, stdin.writer);
  assert.equal(typeof close.offset, 'number');
  assert.equal(typeof packed('client_start').spec.request_key, 'string');
  // `ack` is the one request without an id (never answered).
  const ack = packed('client_ack');
  assert.equal(ack.id, undefined);
  assert.equal(typeof ack.stdout_offset, 'number');
});

for (const name of cases) {
  test(`vector ${name}`, () => {
    const packed = new Uint8Array(readFileSync(new URL(`${name}.msgpack`, dir)));
    const json = JSON.parse(readFileSync(new URL(`${name}.json`, dir), 'utf8'));

    const msg = decodeMessage(packed);
    assert.deepStrictEqual(normalise(msg), normalise(fromJson(json)));
    assert.equal(msg.type, name.replace(/^(client|server)_/, ''));

    const again = encodeMessage(msg);
    assert.deepStrictEqual(normalise(decodeMessage(again)), normalise(msg));
    // Field order is kept and integers take their smallest encoding, as in
    // the daemon, so the bytes match too.
    assert.deepStrictEqual(again, packed);
  });
}

/** Typed-array views (the decoder's are views into the frame) as plain Uint8Arrays. */
function normalise(v) {
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (Array.isArray(v)) return v.map(normalise);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalise(x)]));
  return v;
}
