/**
 * The isolate backend's raw floor: isolated-vm in this process, no HTTP, no host process.
 * Run as `node --no-node-snapshot dist/bench/floors/isolate-floor.js <samples>`; prints one JSON
 * line `{ cold: number[], warm: number[] }` of milliseconds:
 * - cold: a new isolate + context, compile the hello-world module, call its default export;
 * - warm: a new context in an existing isolate, compile (V8's cache warm), call.
 */
import ivm from 'isolated-vm';

const HELLO = 'export default (input) => ({ hello: input.name })';

async function once(isolate: ivm.Isolate): Promise<void> {
  const context = await isolate.createContext();
  const module = await isolate.compileModule(HELLO);
  await module.instantiate(context, () => {
    throw new Error('no imports');
  });
  await module.evaluate();
  const fn = (await module.namespace.get('default', { reference: true })) as ivm.Reference<(input: unknown) => unknown>;
  const out = await fn.apply(undefined, [{ name: 'floor' }], { arguments: { copy: true }, result: { copy: true, promise: true } });
  if ((out as { hello?: unknown }).hello !== 'floor') throw new Error('floor function gave a wrong answer');
  fn.release();
  module.release();
  context.release();
}

async function main(): Promise<void> {
  const samples = Math.max(5, Number(process.argv[2] ?? 50));
  const cold: number[] = [];
  const warm: number[] = [];
  for (let i = 0; i < samples + 5; i++) {
    const t0 = performance.now();
    const isolate = new ivm.Isolate({ memoryLimit: 128 });
    await once(isolate);
    const dt = performance.now() - t0;
    isolate.dispose();
    if (i >= 5) cold.push(dt);
  }
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  for (let i = 0; i < samples + 5; i++) {
    const t0 = performance.now();
    await once(isolate);
    if (i >= 5) warm.push(performance.now() - t0);
  }
  isolate.dispose();
  process.stdout.write(`${JSON.stringify({ cold, warm })}\n`);
}

await main();
