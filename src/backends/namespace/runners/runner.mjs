// Vulcan's node runner, run inside the sandbox as: node runner.mjs ENTRY
// Imports ENTRY (ES module or CommonJS), calls its default export with the input from
// /vulcan/input.json (sync or async), and reports on fd 3 as JSON lines: {"t":"ready"},
// then {"t":"result","output":...} or {"t":"error","code":...,"message":...}.
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';

const RESULT_FD = 3;
const send = (obj) => fs.writeSync(RESULT_FD, JSON.stringify(obj) + '\n');

function classify(err) {
  const code = err && typeof err === 'object' ? err.code : undefined;
  if (code === 'ENOSPC' || code === 'EDQUOT') return 'disk_limit';
  if (code === 'EAGAIN') return 'pids_limit';
  if (err instanceof RangeError && /allocation failed|Array buffer allocation/i.test(String(err.message))) return 'memory_limit';
  return 'exception';
}

function fail(err) {
  process.stderr.write(`${err && err.stack ? err.stack : String(err)}\n`);
  send({ t: 'error', code: classify(err), message: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  process.exit(1);
}

process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

send({ t: 'ready' });
const input = JSON.parse(fs.readFileSync('/vulcan/input.json', 'utf8'));
let settled = false;
process.on('exit', () => {
  // Reached only when the event loop emptied while the default export's promise was pending.
  if (!settled) {
    send({ t: 'error', code: 'exception', message: 'the default export returned a promise that never settled' });
    process.exitCode = 1;
  }
});
let output;
try {
  const mod = await import(pathToFileURL(process.argv[2]).href);
  let fn = mod.default;
  // A CommonJS module compiled from ESM exports { default: fn }.
  if (fn && typeof fn === 'object' && typeof fn.default === 'function') fn = fn.default;
  output = typeof fn === 'function' ? await fn(input) : null;
} catch (err) {
  settled = true;
  fail(err);
}
settled = true;
let text;
try {
  text = JSON.stringify(output === undefined ? null : output);
} catch (err) {
  text = undefined;
}
if (text === undefined) {
  send({ t: 'error', code: 'output_invalid', message: 'the default export returned a value that is not JSON' });
  process.exitCode = 1;
} else {
  send({ t: 'result', output: JSON.parse(text) });
  // The workload is over once the default export settled; timers it left behind end with
  // the sandbox. stdout and stderr are pipes here, written synchronously, so nothing is lost.
  process.exit(0);
}
