// The real npm `e2b` SDK (pinned in package.json) against tether's E2B
// dialect: a command, a PTY and a file roundtrip, with a daemon of its own
// (TETHER_BIN, the workspace's debug build; scripts/e2b-tests.sh).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { Sandbox, CommandExitError } from 'e2b'

const BIN = resolve(process.env.TETHER_BIN ?? '../../../target/debug/tether')
const token = 'e2b-js-' + randomBytes(12).toString('hex')
let daemon
let url

before(async () => {
  const root = mkdtempSync(join(tmpdir(), 'tether-e2b-js-'))
  daemon = spawn(BIN, ['serve', '--listen', '127.0.0.1:0'], {
    cwd: root,
    env: { ...process.env, TETHER_TOKEN: token, TETHER_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('the daemon did not start')), 20000)
    let seen = ''
    daemon.stdout.on('data', (b) => {
      seen += b
      const m = seen.match(/listening on (http:\/\/\S+)/)
      if (m) {
        clearTimeout(timer)
        ok(m[1] + '/compat/e2b')
      }
    })
  })
})

after(() => daemon?.kill())

const connect = () => Sandbox.connect('local', { apiKey: token, apiUrl: url, sandboxUrl: url })

test('a command runs, fails with its code, and streams callbacks', { timeout: 30000 }, async () => {
  const sbx = await connect()
  const r = await sbx.commands.run('echo out; echo err >&2', { cwd: '/tmp' })
  assert.equal(r.stdout, 'out\n')
  assert.equal(r.stderr, 'err\n')
  assert.equal(r.exitCode, 0)
  await assert.rejects(sbx.commands.run('exit 3'), (e) => e instanceof CommandExitError && e.exitCode === 3)
  const seen = []
  const h = await sbx.commands.run('for i in 1 2 3; do echo $i; sleep 0.05; done', {
    background: true,
    onStdout: (s) => seen.push(s),
  })
  assert.ok((await sbx.commands.list()).some((p) => p.pid === h.pid))
  await h.wait()
  assert.equal(seen.join(''), '1\n2\n3\n')
  const sleeper = await sbx.commands.run('sleep 30', { background: true })
  assert.equal(await sbx.commands.kill(sleeper.pid), true)
  assert.equal(await sbx.commands.kill(sleeper.pid), false)
})

test('a PTY takes input, reports its size and exits', { timeout: 30000 }, async () => {
  const sbx = await connect()
  let out = ''
  const dec = new TextDecoder()
  const p = await sbx.pty.create({ rows: 20, cols: 50, onData: (d) => { out += dec.decode(d) } })
  await sbx.pty.sendInput(p.pid, new TextEncoder().encode('stty size; exit 5\n'))
  await assert.rejects(p.wait(), (e) => e instanceof CommandExitError && e.exitCode === 5)
  assert.match(out, /20 50/)
})

test('a file goes up and comes back the same', { timeout: 30000 }, async () => {
  const sbx = await connect()
  const data = randomBytes(1 << 20)
  const info = await sbx.files.write('js/blob.bin', new Blob([data]))
  assert.equal(info.name, 'blob.bin')
  const back = await sbx.files.read('js/blob.bin', { format: 'bytes' })
  assert.ok(Buffer.from(back).equals(data))
  assert.equal(await sbx.files.exists('js/blob.bin'), true)
  assert.deepEqual((await sbx.files.list('js')).map((e) => e.name), ['blob.bin'])
})
