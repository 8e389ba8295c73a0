// The addon loader: when nothing loads, one coded error lists every path tried with its cause
// and says which command fixes it.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';

const probe = `
const rl = require(${JSON.stringify(path.resolve(__dirname, '../lib/index'))});
try { rl.getNumThreads(); console.log('LOADED'); }
catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;

function loadWith(addonPath: string): { code?: string; message?: string } | 'LOADED' {
  const r = spawnSync(process.execPath, [...process.execArgv, '-e', probe], {
    env: { ...process.env, RLHF_ADDON_PATH: addonPath }, encoding: 'utf8',
  });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return line === 'LOADED' ? 'LOADED' : JSON.parse(line);
}

t.test('a missing addon gives E_ADDON_LOAD naming the path and the fix', async (t) => {
  const missing = path.join(os.tmpdir(), 'rlhf-no-such-addon.node');
  const r = loadWith(missing);
  t.not(r, 'LOADED');
  if (r === 'LOADED') return;
  t.equal(r.code, 'E_ADDON_LOAD');
  t.match(r.message, `${missing}: not found`);
  t.match(r.message, /npm run build/);
});

t.test('a file that is not an addon gives E_ADDON_LOAD with the loader\'s reason', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-loader-'));
  const bogus = path.join(dir, 'bogus.node');
  fs.writeFileSync(bogus, 'this is not a shared object');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const r = loadWith(bogus);
  t.not(r, 'LOADED');
  if (r === 'LOADED') return;
  t.equal(r.code, 'E_ADDON_LOAD');
  t.match(r.message, new RegExp(`${bogus.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*(invalid ELF|too short|file)`));
});

t.test('the built addon loads', async (t) => {
  t.equal(loadWith(path.resolve(__dirname, '../build/Release/rlhf.node')), 'LOADED');
});
