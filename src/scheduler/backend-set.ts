/**
 * The node's backends, probed once at start-up, and the choice of backend for a workload:
 * a named one, or `auto`, which tries them in AUTO_ORDER and takes the first that is
 * available and accepts the workload (Hono's SmartRouter shape).
 */
import type { Availability, Backend, RunSpec } from '../core/backend.js';
import type { BackendContext } from '../core/context.js';
import { VulcanError } from '../core/errors.js';
import { BACKEND_NAMES, type BackendName, type Isolation } from '../core/types.js';
import { createBackend } from '../backends/registry.js';

/**
 * The order `auto` tries backends in: the fastest wall that can run the code first. JS, TS
 * and Wasm (and node code that needs no Node built-ins) go to isolate; python, node and sh
 * to namespace; images to gvisor, then container, then microvm.
 */
export const AUTO_ORDER: readonly BackendName[] = ['isolate', 'namespace', 'gvisor', 'container', 'microvm'];

/** A backend and what its probe said. */
export interface BackendEntry {
  readonly backend: Backend;
  readonly availability: Availability;
}

/** What `GET /v1/backends` shows for one backend. */
export interface BackendInfo {
  name: BackendName;
  available: boolean;
  reason?: string;
  isolation: string;
  runtimes: readonly string[];
  capabilities: Backend['capabilities'];
  info?: Readonly<Record<string, string>>;
}

export interface Selection {
  readonly backend: Backend;
  readonly reason: string;
}

export class BackendSet {
  private constructor(private readonly entries: ReadonlyMap<BackendName, BackendEntry>) {}

  /** Creates and probes the named backends (all by default), then reconciles each available one. */
  static async create(ctx: BackendContext, names: readonly BackendName[] = BACKEND_NAMES): Promise<BackendSet> {
    const entries = new Map<BackendName, BackendEntry>();
    await Promise.all(
      names.map(async (name) => {
        let backend: Backend;
        try {
          backend = await createBackend(name, ctx);
        } catch (err) {
          ctx.log.error({ err, backend: name }, 'cannot load backend');
          return;
        }
        let availability: Availability;
        try {
          availability = await backend.probe();
        } catch (err) {
          availability = { available: false, reason: `probe failed: ${(err as Error).message}` };
        }
        if (availability.available && backend.reconcile) {
          try {
            await backend.reconcile();
          } catch (err) {
            ctx.log.error({ err, backend: name }, 'reconcile failed');
          }
        }
        ctx.log.info({ backend: name, ...availability }, 'backend probed');
        entries.set(name, { backend, availability });
      }),
    );
    return new BackendSet(entries);
  }

  /** Every backend, in the registry's order, as `GET /v1/backends` shows it. */
  describe(): BackendInfo[] {
    const out: BackendInfo[] = [];
    for (const name of BACKEND_NAMES) {
      const e = this.entries.get(name);
      if (!e) continue;
      const { backend, availability } = e;
      out.push({
        name,
        available: availability.available,
        ...(availability.available ? {} : { reason: availability.reason }),
        isolation: backend.isolation,
        runtimes: backend.runtimes,
        capabilities: backend.capabilities,
        ...(availability.available && availability.info ? { info: availability.info } : {}),
      });
    }
    return out;
  }

  get(name: BackendName): BackendEntry | undefined {
    return this.entries.get(name);
  }

  /**
   * Picks the backend for `spec`. Throws `backend_unavailable` (503) when the named backend
   * cannot run here, `unknown_runtime` (422) when it does not serve the runtime, and
   * `backend_unavailable` when `auto` finds no backend that will take it.
   */
  select(isolation: Isolation, spec: RunSpec): Selection {
    if (isolation !== 'auto') {
      const e = this.entries.get(isolation);
      if (!e || !e.availability.available) {
        throw new VulcanError('backend_unavailable', `the ${isolation} backend is unavailable on this node: ${e && !e.availability.available ? e.availability.reason : 'not loaded'}`, {
          details: { isolation },
        });
      }
      if (!e.backend.runtimes.includes(spec.runtime)) {
        throw new VulcanError('unknown_runtime', `the ${isolation} backend does not run ${spec.runtime}; it runs ${e.backend.runtimes.join(', ')}`, {
          details: { isolation, runtime: spec.runtime, supported: e.backend.runtimes },
        });
      }
      const acc = e.backend.accepts(spec);
      if (!acc.ok) throw new VulcanError('unknown_runtime', `the ${isolation} backend cannot run this workload: ${acc.reason}`, { details: { isolation } });
      return { backend: e.backend, reason: `requested; ${acc.reason}` };
    }
    const refusals: string[] = [];
    for (const name of AUTO_ORDER) {
      const e = this.entries.get(name);
      if (!e) continue;
      if (!e.availability.available) {
        if (e.backend.runtimes.includes(spec.runtime)) refusals.push(`${name}: ${e.availability.reason}`);
        continue;
      }
      if (!e.backend.runtimes.includes(spec.runtime)) continue;
      const acc = e.backend.accepts(spec);
      if (acc.ok) return { backend: e.backend, reason: `auto: ${acc.reason}${refusals.length ? ` (not ${refusals.join('; ')})` : ''}` };
      refusals.push(`${name}: ${acc.reason}`);
    }
    throw new VulcanError('backend_unavailable', `no available backend runs ${spec.runtime} here${refusals.length ? ` (${refusals.join('; ')})` : ''}`, {
      details: { runtime: spec.runtime, refusals },
    });
  }

  async close(): Promise<void> {
    await Promise.all([...this.entries.values()].map((e) => e.backend.close().catch(() => undefined)));
  }
}
