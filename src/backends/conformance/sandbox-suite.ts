/**
 * The sandbox conformance suite: the checklist of ../shared/spec/runtime-conformance.md
 * (health; spawn, then exec of `echo ok`; write, read, list, move, chmod, stat, glob and
 * delete of a file; streaming exec; live preview; pause and resume; destroy; restart
 * reconciliation), run through the real HTTP API of a real `vulcan serve` process against
 * one backend.
 *
 * It is a plain runner (`runSandboxConformance`) so that `vulcan certify` can run it, and
 * `describeSandboxConformance` wraps it for node:test. A backend that lacks a feature
 * declares it in `skip` with the reason (or through its capability flags); a skip is
 * reported as such and never counts as a pass.
 */
import { spawnVulcanServe } from '../../server/spawn-serve.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BackendName } from '../../core/types.js';
import { Sandbox, VulcanClient } from '../../sdk/index.js';

export const SANDBOX_CHECKS = ['health', 'spawn-exec', 'files', 'streaming-exec', 'live-preview', 'pause-resume', 'destroy', 'restart-reconciliation'] as const;
export type SandboxCheck = (typeof SANDBOX_CHECKS)[number];

export interface CheckResult {
  readonly check: SandboxCheck;
  readonly status: 'pass' | 'fail' | 'skip';
  readonly ms: number;
  /** Why it failed or was skipped. */
  readonly detail?: string;
}

/** A Vulcan server the suite can stop and start again on the same data directory. */
export interface SuiteServer {
  readonly url: string;
  stop(): Promise<void>;
}

export interface SandboxConformanceOptions {
  readonly backend: BackendName;
  /**
   * The image the sandboxes run on (default: the backend's). The preview and egress checks
   * need /bin/sh and /usr/bin/python3 in it: `python` does.
   */
  readonly image?: string;
  /** Checks this backend does not pass, each with the reason. */
  readonly skip?: Partial<Record<SandboxCheck, string>>;
  /** Starts a server on `dataDir`. Default: `bin/vulcan serve --port 0` as a child process. */
  readonly start?: (dataDir: string) => Promise<SuiteServer>;
  /** Lists what the sandboxes of the server on `dataDir` left on the host; must end empty. */
  readonly leftovers?: (dataDir: string) => Promise<string[]>;
  /** Progress for people. */
  readonly progress?: (msg: string) => void;
}


/** `vulcan serve` in a child process on a random port; resolves once it listens. */
export async function startVulcanServe(dataDir: string): Promise<SuiteServer> {
  const { url, stop } = await spawnVulcanServe({ dataDir });
  return {
    url,
    stop: () => stop(),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms${last ? `: ${(last as Error).message}` : ''}`);
}

/** Runs every check against `opts.backend` and returns one result per check. Never throws for a failed check. */
export async function runSandboxConformance(options: SandboxConformanceOptions): Promise<CheckResult[]> {
  let opts = options;
  const start = opts.start ?? startVulcanServe;
  const progress = opts.progress ?? (() => undefined);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-sbx-conformance-'));
  const results: CheckResult[] = [];
  let server: SuiteServer | undefined;
  const made: Sandbox[] = [];
  let shared: Sandbox | undefined;

  let unsupported: string | undefined;
  const run = async (name: SandboxCheck, fn: () => Promise<void>) => {
    const reason = opts.skip?.[name] ?? (name === 'health' ? undefined : unsupported);
    if (reason !== undefined) {
      results.push({ check: name, status: 'skip', ms: 0, detail: reason });
      progress(`skip ${name}: ${reason}`);
      return;
    }
    const t0 = performance.now();
    try {
      await fn();
      results.push({ check: name, status: 'pass', ms: Math.round(performance.now() - t0) });
      progress(`pass ${name}`);
    } catch (err) {
      results.push({ check: name, status: 'fail', ms: Math.round(performance.now() - t0), detail: (err as Error).message });
      progress(`FAIL ${name}: ${(err as Error).message}${made.length ? ` (sandboxes: ${made.map((s) => s.id).join(', ')})` : ''}`);
    }
  };
  const create = async (extra: Parameters<typeof Sandbox.create>[0] = {}) => {
    if (!server) throw new Error('no server');
    const s = await Sandbox.create({ url: server.url, isolation: opts.backend, ttlS: 600, ...(opts.image ? { image: opts.image } : {}), ...extra });
    made.push(s);
    return s;
  };

  try {
    server = await start(dataDir);
    await run('health', async () => {
      const client = new VulcanClient({ url: server?.url ?? '' });
      const h = await client.health();
      check(h.status === 'ok', `healthz said ${JSON.stringify(h)}`);
      const b = (await client.backends()).find((x) => x.name === opts.backend);
      check(b?.available, `backend ${opts.backend} is unavailable: ${b?.reason ?? 'not listed'}`);
      // A backend without sandboxes is healthy; every other check is skipped with the reason.
      if (!b.capabilities.sandboxes) unsupported = `the ${opts.backend} backend does not host sandboxes (capabilities.sandboxes is false)`;
      else if (!b.capabilities.pause && opts.skip?.['pause-resume'] === undefined) opts = { ...opts, skip: { ...opts.skip, 'pause-resume': `the ${opts.backend} backend cannot pause (capabilities.pause is false)` } };
    });

    await run('spawn-exec', async () => {
      shared = await create();
      check(shared.info.state === 'running', `state is ${shared.info.state}`);
      check(shared.info.isolation_used === opts.backend, `isolation_used is ${shared.info.isolation_used}`);
      const r = await shared.exec(['echo', 'ok']);
      check(r.exit_code === 0 && r.stdout === 'ok\n', `echo ok gave ${JSON.stringify(r)}`);
    });

    await run('files', async () => {
      const s = shared ?? (await create());
      const f = s.files;
      const w = await f.write('/work/conf/a.txt', 'conformance\n');
      check(w.size === 12, `write answered ${JSON.stringify(w)}`);
      check((await f.read('/work/conf/a.txt')).toString() === 'conformance\n', 'read back differs');
      const list = await f.list('/work/conf');
      check(list.entries.some((e) => e.name === 'a.txt' && e.type === 'file' && e.size === 12), `list: ${JSON.stringify(list)}`);
      await f.move('/work/conf/a.txt', '/work/conf/sub/b.txt');
      await f.chmod('/work/conf/sub/b.txt', 0o600);
      const st = await f.stat('/work/conf/sub/b.txt');
      check(st.type === 'file' && st.mode === 0o600 && st.size === 12, `stat: ${JSON.stringify(st)}`);
      const g = await f.glob('/work/conf/**/*.txt');
      check(g.paths.length === 1 && g.paths[0] === '/work/conf/sub/b.txt', `glob: ${JSON.stringify(g)}`);
      await f.remove('/work/conf/sub/b.txt');
      const gone = await f.stat('/work/conf/sub/b.txt').then(
        () => false,
        (e: { status?: number }) => e.status === 404,
      );
      check(gone, 'the deleted file is still there');
      const seen = await s.exec(['cat', '/work/conf/sub/b.txt']);
      check(seen.exit_code !== 0, 'exec still sees the deleted file');
    });

    await run('streaming-exec', async () => {
      const s = shared ?? (await create());
      const events = [];
      const t0 = performance.now();
      let firstAt = 0;
      for await (const ev of s.execStream(['sh', '-c', 'echo one; sleep 0.5; echo two >&2; exit 4'])) {
        if (!firstAt) firstAt = performance.now() - t0;
        events.push(ev);
      }
      const text = events.map((e) => (e.type === 'exit' ? `exit:${String(e.exit_code)}` : `${e.type}:${e.data}`)).join('|');
      check(text === 'stdout:one\n|stderr:two\n|exit:4', `events: ${text}`);
      check(firstAt < 450, `the first line came after ${Math.round(firstAt)} ms, not as it was printed`);
    });

    await run('live-preview', async () => {
      const s = shared ?? (await create());
      await s.files.write('/work/site/index.html', '<h1>preview ok</h1>');
      const started = await s.exec(['sh', '-c', 'cd /work/site && nohup /usr/bin/python3 -m http.server 8765 --bind 127.0.0.1 >/tmp/http.log 2>&1 &']);
      check(started.exit_code === 0, `could not start a web server: ${started.stderr}`);
      // Python's web server takes 6–24 s to start in a microVM under TCG on a busy machine.
      const body = await waitFor(
        'the preview answering',
        async () => {
          const res = await fetch(s.previewUrl(8765, '/index.html'));
          return res.status === 200 ? res.text() : undefined;
        },
        60_000,
      );
      check(body === '<h1>preview ok</h1>', `preview served ${JSON.stringify(body)}`);
      const egress = await s.exec(['/usr/bin/python3', '-c', 'import socket\ntry:\n socket.create_connection(("1.1.1.1", 80), timeout=2); print("open")\nexcept OSError as e: print("blocked")']);
      check(egress.stdout.trim() === 'blocked', `egress from the sandbox: ${egress.stdout}${egress.stderr}`);
    });

    await run('pause-resume', async () => {
      const s = shared ?? (await create());
      const count = async () => Number((await s.files.read('/tmp/count')).toString());
      // Written aside and renamed into place, so a read never sees a half-written number.
      await s.exec(['sh', '-c', "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done' >/dev/null 2>&1 &"]);
      await waitFor('the counter starting', async () => ((await s.files.read('/tmp/count')).length > 0 ? true : undefined));
      const p = await s.pause();
      check(p.state === 'paused' && p.expires_at === null, `pause answered ${JSON.stringify(p)}`);
      const refused = await s.exec(['true']).then(
        () => 0,
        (e: { status?: number }) => e.status ?? -1,
      );
      check(refused === 409, `exec while paused gave ${refused}, not 409`);
      await s.resume();
      const a = await count();
      check(a > 0, `the counter read ${a} after resume`);
      let b = a;
      await waitFor('the process running on after resume', async () => ((b = await count()) > a ? b : undefined)).catch(() => undefined);
      check(b > a, `the process did not run on after resume (${a} → ${b})`);
    });

    await run('destroy', async () => {
      const s = await create();
      await s.destroy();
      const info = await s.refresh();
      check(info.state === 'destroyed', `state after DELETE is ${info.state}`);
      const code = await s.exec(['true']).then(
        () => 0,
        (e: { status?: number; code?: string }) => (e.code === 'sandbox_destroyed' ? e.status : -1),
      );
      check(code === 410, `exec after destroy gave ${String(code)}, not 410 sandbox_destroyed`);
    });

    await run('restart-reconciliation', async () => {
      const s = shared ?? (await create());
      await s.files.write('/work/keep.txt', 'kept across the restart');
      await s.exec(['sh', '-c', 'nohup sleep 600 >/dev/null 2>&1 & echo $! > /tmp/sleeper.pid']);
      await server?.stop();
      server = await start(dataDir);
      const again = await Sandbox.connect(s.id, { url: server.url });
      check(again.info.state === 'running' || again.info.state === 'paused', `after the restart the sandbox is ${again.info.state} (${again.info.end_reason ?? ''})`);
      if (again.info.state === 'paused') await again.resume();
      check((await again.files.read('/work/keep.txt')).toString() === 'kept across the restart', 'the file did not survive the restart');
      const alive = await again.exec(['sh', '-c', 'kill -0 "$(cat /tmp/sleeper.pid)" && echo alive']);
      check(alive.stdout.trim() === 'alive', `the background process did not survive: ${alive.stdout}${alive.stderr}`);
      made.splice(0, made.length, ...made.map((m) => (m.id === s.id ? again : m)));
      shared = again;
    });
  } catch (err) {
    progress(`suite aborted: ${(err as Error).message}`);
    for (const name of SANDBOX_CHECKS) if (!results.some((r) => r.check === name)) results.push({ check: name, status: 'fail', ms: 0, detail: `not run: ${(err as Error).message}` });
  } finally {
    for (const s of made) {
      await Sandbox.connect(s.id, { url: server?.url ?? s.url })
        .then((x) => x.destroy())
        .catch(() => undefined);
    }
    await server?.stop().catch(() => undefined);
  }
  const left = opts.leftovers ? await opts.leftovers(dataDir) : [];
  fs.rmSync(dataDir, { recursive: true, force: true });
  if (left.length) {
    const destroy = results.findIndex((r) => r.check === 'destroy');
    const failed: CheckResult = { check: 'destroy', status: 'fail', ms: 0, detail: `left on the host: ${left.join(', ')}` };
    if (destroy >= 0) results[destroy] = failed;
  }
  return results;
}

/** The node:test wrapper: one test per check, skips printed with their reason. */
export function describeSandboxConformance(name: string, opts: SandboxConformanceOptions): void {
  describe(`${name}: sandbox conformance`, () => {
    let results: CheckResult[] = [];
    before(async () => {
      results = await runSandboxConformance(opts);
    });
    after(() => undefined);
    for (const c of SANDBOX_CHECKS) {
      it(c, (t) => {
        const r = results.find((x) => x.check === c);
        if (!r) throw new Error(`${c} did not run`);
        if (r.status === 'skip') return t.skip(r.detail);
        if (r.status === 'fail') throw new Error(r.detail);
      });
    }
  });
}
