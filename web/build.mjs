// Builds the terminal page into $TETHER_WEB_OUT (default dist/): index.html,
// app.js (one bundle: xterm.js, the fit addon, msgpack, our code) and
// app.css (xterm's stylesheet followed by ours).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.env.TETHER_WEB_OUT || join(here, 'dist'));
mkdirSync(out, { recursive: true });

await build({
  entryPoints: [join(here, 'src/app.js')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  // Licence comments of the bundled packages stay at the end of the file.
  legalComments: 'eof',
  logLevel: 'warning',
});

const xtermCss = createRequire(import.meta.url).resolve('@xterm/xterm/css/xterm.css');
writeFileSync(join(out, 'app.css'), readFileSync(xtermCss, 'utf8') + '\n' + readFileSync(join(here, 'src/app.css'), 'utf8'));
copyFileSync(join(here, 'src/index.html'), join(out, 'index.html'));
console.log(`built the terminal page into ${out}`);
