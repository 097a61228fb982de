/**
 * The JavaScript that runs first in every fresh context, before any user code. It is source
 * text evaluated inside the isolate, never in Node: it sees only the isolate's own built-ins
 * and the two plain functions the host hands it (`hostOut`, `hostTimer`), whose arguments are
 * copied out by structured clone.
 *
 * It evaluates to a factory `(hostOut, hostTimer, wasmPages, hardened) => dispatch`.
 * `dispatch(op, …)` is the one entry point the host calls:
 * - `dispatch('module', namespace, inputJson, outputBytes)` calls the module's default export;
 * - `dispatch('script', factory, inputJson, outputBytes, seed?)` calls the CommonJS factory
 *   (protocol.ts `wrapCommonJs`) for a new wrapper, runs it and calls `module.exports` (or its
 *   `default`);
 * - `dispatch('wasm', bytes, inputJson, outputBytes, seed?)` instantiates a Wasm module and calls
 *   its exported `main` with `input.args`;
 * - `dispatch('scriptSync', factory, inputJson, outputBytes, seed?)` runs a script job within the
 *   call (the host calls it synchronously, with a short timeout); its output is kept, not sent,
 *   and the call answers `{ out, answer, pending }` (out: fd, text, fd, text …), copied out
 *   after the run's microtasks; when the run's promise is still pending, `dispatch('await',
 *   copied)` sends what was printed since and resolves to the answer;
 * - `dispatch('fire', timerId, generation)` runs a due timer of the current run (a timer of an
 *   earlier run of a reused context never fires);
 * - `dispatch('reset', seed)` (hardened contexts only) clears what the last run left: see below.
 *   A `seed` given to `script` or `wasm` does the same first, in the same call, before any of the
 *   run's code; when that reset is not clean the call answers `{ ok: false, kind: 'not_clean' }`
 *   and runs nothing.
 * `hostOut` and `hostTimer` calls carry the run's generation, which each reset moves on, so the
 * host drops what a run's late microtasks send once the next run has begun.
 *
 * A call resolves to a plain object of strings (`{ ok, json }` or `{ ok: false, kind, name,
 * message, stack, wasmFull }`), which the host checks as untrusted data.
 *
 * What it changes in the context:
 * - `console` writes to the workload's stdout/stderr, stopping past the output cap;
 * - `setTimeout`/`setInterval`/`clear*`/`queueMicrotask`, backed by host timers;
 * - `fetch` exists and always rejects (there is no network);
 * - `SharedArrayBuffer` and `Atomics` are removed;
 * - `WebAssembly.Module`/`Instance`/`Memory`/`compile`/`instantiate` are wrapped so that every
 *   Wasm memory gets a maximum and all of a run's memories together stay within `mem_mb`:
 *   V8 allocates Wasm memory outside the heap, where isolated-vm's limit does not see it.
 *
 * With `hardened` (SES must have been evaluated in the context first), the context is made fit
 * to serve many runs, one after another, with nothing of one run reaching the next:
 * - `Math.random` draws from a generator reseeded by the host at every `reset`;
 * - creating a `FinalizationRegistry` marks the run, since its callback could run during a
 *   later run: `reset` then answers "not clean" and the host throws the isolate away;
 * - SES `lockdown()` freezes every intrinsic (prototypes, `JSON`, `Math`, `Error` …), then
 *   everything else reachable from the global object is hardened too, and a walk checks that
 *   nothing reachable but the global object itself is left mutable (else the factory throws);
 * - the global object's own properties are recorded and made non-configurable (a run may assign
 *   them, not delete or redefine them); `reset` deletes what a run added, puts back what it
 *   replaced, resets `Error.stackTraceLimit`/`prepareStackTrace` and all per-run
 *   state (timers, output counts, Wasm accounting), and answers whether that fully worked.
 */
export const BOOTSTRAP_SOURCE = String.raw`(function vulcanBootstrap(hostOut, hostTimer, wasmPages, hardened) {
'use strict';
const g = globalThis;
const ObjectDefine = Object.defineProperty;
const ObjectKeys = Object.keys;
const ObjectGetProto = Object.getPrototypeOf;
const ObjectGetOwnDesc = Object.getOwnPropertyDescriptor;
const ReflectApply = Reflect.apply;
const ReflectConstruct = Reflect.construct;
const JSONStringify = JSON.stringify;
const JSONParse = JSON.parse;
const StringCtor = String;
const ArrayIsArray = Array.isArray;
const MathMin = Math.min;
const NumberIsSafeInteger = Number.isSafeInteger;
const PromiseCtor = Promise;
const PromiseResolve = Promise.resolve.bind(Promise);
const ErrorCtor = Error;
const TypeErrorCtor = TypeError;
const RangeErrorCtor = RangeError;
const MapCtor = Map;
const Uint8ArrayCtor = Uint8Array;
const ArrayBufferCtor = ArrayBuffer;
const ArrayBufferIsView = ArrayBuffer.isView;
const ReflectOwnKeys = Reflect.ownKeys;
const ReflectDeleteProperty = Reflect.deleteProperty;
const ReflectDefineProperty = Reflect.defineProperty;
const ReflectSet = Reflect.set;
const ObjectIs = Object.is;
const ObjectIsExtensible = Object.isExtensible;
const ObjectIsFrozen = Object.isFrozen;
const MathImul = Math.imul;
const SetCtor = Set;

// --- globals that must not exist -------------------------------------------------------
delete g.SharedArrayBuffer;
delete g.Atomics;

// --- console ------------------------------------------------------------------------------
let outputCap = 1048576;
const sent = [0, 0, 0];
// While a synchronous run is under way (its scriptSync call), output is kept here and handed
// back with its answer, in order, rather than sent through hostOut: the host reads it first.
let collecting = false;
let collected = [];
function emit(fd, text) {
  if (sent[fd] > outputCap) return;
  sent[fd] += text.length;
  if (collecting) collected.push(fd, text);
  else hostOut(fd, text, generation);
}
function describe(value, depth, seen) {
  const type = typeof value;
  if (type === 'string') return depth === 0 ? value : JSONStringify(value);
  if (type === 'function') return '[Function: ' + (value.name || 'anonymous') + ']';
  if (type === 'bigint') return StringCtor(value) + 'n';
  if (type === 'symbol' || type !== 'object' || value === null) return StringCtor(value);
  if (value instanceof ErrorCtor) return StringCtor(value.stack || value);
  if (seen.indexOf(value) !== -1) return '[Circular]';
  if (depth > 4) return ArrayIsArray(value) ? '[Array]' : '[Object]';
  seen.push(value);
  let text;
  if (ArrayIsArray(value)) {
    const parts = [];
    for (let i = 0; i < value.length && i < 100; i++) parts.push(describe(value[i], depth + 1, seen));
    if (value.length > 100) parts.push('... ' + (value.length - 100) + ' more items');
    text = '[ ' + parts.join(', ') + ' ]';
  } else if (value instanceof MapCtor) {
    const parts = [];
    value.forEach((v, k) => parts.push(describe(k, depth + 1, seen) + ' => ' + describe(v, depth + 1, seen)));
    text = 'Map(' + value.size + ') { ' + parts.join(', ') + ' }';
  } else {
    const parts = [];
    const keys = ObjectKeys(value);
    for (let i = 0; i < keys.length && i < 100; i++) parts.push(keys[i] + ': ' + describe(value[keys[i]], depth + 1, seen));
    text = parts.length === 0 ? '{}' : '{ ' + parts.join(', ') + ' }';
  }
  seen.pop();
  return text;
}
function format(args) {
  const parts = [];
  for (let i = 0; i < args.length; i++) {
    try { parts.push(describe(args[i], 0, [])); } catch (e) { parts.push('[unprintable]'); }
  }
  return parts.join(' ') + '\n';
}
const consoleObject = {};
for (const [name, fd] of [['log', 1], ['info', 1], ['debug', 1], ['trace', 2], ['warn', 2], ['error', 2]]) {
  consoleObject[name] = function (...args) { emit(fd, format(args)); };
}
consoleObject.dir = function (value) { emit(1, format([value])); };
consoleObject.table = consoleObject.log;
consoleObject.assert = function (cond, ...args) { if (!cond) emit(2, 'Assertion failed' + (args.length ? ': ' + format(args) : '\n')); };
consoleObject.time = consoleObject.timeEnd = consoleObject.timeLog = consoleObject.count = consoleObject.group = consoleObject.groupEnd = function () {};
ObjectDefine(g, 'console', { value: consoleObject, writable: true, configurable: true, enumerable: false });

// --- timers -------------------------------------------------------------------------------
const timers = new MapCtor();
let nextTimer = 1;
let generation = 0;
const MAX_TIMERS = 10000;
function addTimer(fn, ms, args, repeat) {
  if (typeof fn !== 'function') throw new TypeErrorCtor('The "callback" argument must be of type function');
  if (timers.size >= MAX_TIMERS) throw new RangeErrorCtor('too many pending timers (' + MAX_TIMERS + ')');
  let delay = +ms;
  if (!(delay >= 1 && delay <= 2147483647)) delay = 1;
  const id = nextTimer++;
  timers.set(id, { fn, args, delay, repeat });
  hostTimer(id, delay, generation);
  return id;
}
function clearTimer(id) { timers.delete(+id); }
const timerApi = {
  setTimeout(fn, ms, ...args) { return addTimer(fn, ms, args, false); },
  setInterval(fn, ms, ...args) { return addTimer(fn, ms, args, true); },
  clearTimeout: clearTimer,
  clearInterval: clearTimer,
  queueMicrotask(fn) {
    if (typeof fn !== 'function') throw new TypeErrorCtor('The "callback" argument must be of type function');
    PromiseResolve().then(() => fn());
  },
};
for (const name of ObjectKeys(timerApi)) ObjectDefine(g, name, { value: timerApi[name], writable: true, configurable: true, enumerable: false });

// --- fetch: there is no network -----------------------------------------------------------
ObjectDefine(g, 'fetch', {
  value: function fetch() { return PromiseCtor.reject(new TypeErrorCtor('fetch failed: the isolate backend has no network access')); },
  writable: true, configurable: true, enumerable: false,
});

// --- WebAssembly memory accounting --------------------------------------------------------
const W = g.WebAssembly;
const OModule = W.Module;
const OInstance = W.Instance;
const OMemory = W.Memory;
const OCompileError = W.CompileError;
const memoryBufferGet = ObjectGetOwnDesc(OMemory.prototype, 'buffer').get;
const byteLengthGet = ObjectGetOwnDesc(ArrayBufferCtor.prototype, 'byteLength').get;
const modulePages = new WeakMap();
const tracked = [];
let pagesLeft = wasmPages;
function overCap(pages) {
  return new RangeErrorCtor('WebAssembly memory of ' + pages + ' pages (64 KiB each) is over what mem_mb leaves for this run (' + pagesLeft + ' pages); raise resources.mem_mb');
}
function charge(pages) {
  if (pages > pagesLeft) throw overCap(pages);
  pagesLeft -= pages;
}
function copyBytes(source) {
  if (source instanceof ArrayBufferCtor) return new Uint8ArrayCtor(source.slice(0));
  if (ArrayBufferIsView(source)) {
    const view = new Uint8ArrayCtor(source.buffer, source.byteOffset, source.byteLength);
    return view.slice();
  }
  throw new TypeErrorCtor('WebAssembly.Module(): Argument 0 must be a buffer source');
}
function readU32(b, p) {
  let result = 0;
  let scale = 1;
  for (let i = 0; i < 5; i++) {
    const byte = b[p.i++];
    if (byte === undefined) throw new OCompileError('WebAssembly.Module(): section is truncated');
    result += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return result;
    scale *= 128;
  }
  throw new OCompileError('WebAssembly.Module(): invalid LEB128 number');
}
function writeU32(out, value) {
  let v = value;
  do {
    let byte = v % 128;
    v = (v - byte) / 128;
    if (v > 0) byte |= 0x80;
    out.push(byte);
  } while (v > 0);
}
// Gives every memory the module defines a maximum of at most wasmPages, rewriting the memory
// section; returns the new bytes and the pages its memories may reach in total.
function clampModule(bytes) {
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) return { bytes, pages: 0 };
  const parts = [bytes.subarray(0, 8)];
  let total = 8;
  let pages = 0;
  const p = { i: 8 };
  while (p.i < bytes.length) {
    const start = p.i;
    const id = bytes[p.i++];
    const size = readU32(bytes, p);
    const end = p.i + size;
    if (end > bytes.length) return { bytes, pages: 0 }; // V8 reports the malformed module
    if (id === 5) {
      const q = { i: p.i };
      const count = readU32(bytes, q);
      const body = [];
      writeU32(body, count);
      for (let k = 0; k < count; k++) {
        const flags = bytes[q.i++];
        if (flags !== 0 && flags !== 1) throw new OCompileError('WebAssembly.Module(): shared and 64-bit memories are not available in the isolate backend');
        const min = readU32(bytes, q);
        const max = MathMin(flags === 1 ? readU32(bytes, q) : wasmPages, wasmPages);
        if (min > max) throw new RangeErrorCtor('WebAssembly memory of ' + min + ' initial pages (64 KiB each) is over mem_mb (' + wasmPages + ' pages); raise resources.mem_mb');
        body.push(1);
        writeU32(body, min);
        writeU32(body, max);
        pages += max;
      }
      if (q.i !== end) throw new OCompileError('WebAssembly.Module(): malformed memory section');
      const head = [5];
      writeU32(head, body.length);
      const section = new Uint8ArrayCtor(head.length + body.length);
      section.set(head, 0);
      section.set(body, head.length);
      parts.push(section);
      total += section.length;
    } else {
      parts.push(bytes.subarray(start, end));
      total += end - start;
    }
    p.i = end;
  }
  const out = new Uint8ArrayCtor(total);
  let offset = 0;
  for (const part of parts) { out.set(part, offset); offset += part.length; }
  return { bytes: out, pages };
}
function Module(source) {
  if (new.target === undefined) throw new TypeErrorCtor("WebAssembly.Module must be invoked with 'new'");
  const clamped = clampModule(copyBytes(source));
  const module = ReflectConstruct(OModule, [clamped.bytes], new.target);
  modulePages.set(module, clamped.pages);
  return module;
}
function track(instance, pages) {
  const exportsObject = instance.exports;
  for (const key of ObjectKeys(exportsObject)) {
    const value = exportsObject[key];
    if (value instanceof OMemory) tracked.push({ memory: value, maxBytes: pages * 65536 });
  }
}
function Instance(module, imports) {
  if (new.target === undefined) throw new TypeErrorCtor("WebAssembly.Instance must be invoked with 'new'");
  const pages = modulePages.get(module);
  if (pages === undefined) throw new TypeErrorCtor('WebAssembly.Instance(): Argument 0 must be a WebAssembly.Module');
  charge(pages);
  const instance = ReflectConstruct(OInstance, [module, imports], new.target);
  track(instance, pages);
  return instance;
}
function Memory(descriptor) {
  if (new.target === undefined) throw new TypeErrorCtor("WebAssembly.Memory must be invoked with 'new'");
  if (descriptor === null || typeof descriptor !== 'object') throw new TypeErrorCtor('WebAssembly.Memory(): Argument 0 must be a memory descriptor');
  if (descriptor.shared) throw new TypeErrorCtor('WebAssembly.Memory(): shared memories are not available in the isolate backend');
  const initial = descriptor.initial !== undefined ? descriptor.initial : descriptor.minimum;
  const maximum = descriptor.maximum === undefined ? wasmPages : MathMin(+descriptor.maximum, wasmPages);
  if (+initial > maximum) throw overCap(+initial);
  charge(maximum);
  const memory = ReflectConstruct(OMemory, [{ initial, maximum }], new.target);
  tracked.push({ memory, maxBytes: maximum * 65536 });
  return memory;
}
for (const [wrapper, original] of [[Module, OModule], [Instance, OInstance], [Memory, OMemory]]) {
  wrapper.prototype = original.prototype;
  ObjectDefine(original.prototype, 'constructor', { value: wrapper, writable: true, configurable: true, enumerable: false });
}
Module.exports = OModule.exports;
Module.imports = OModule.imports;
Module.customSections = OModule.customSections;
ObjectDefine(W, 'Module', { value: Module, writable: true, configurable: true, enumerable: false });
ObjectDefine(W, 'Instance', { value: Instance, writable: true, configurable: true, enumerable: false });
ObjectDefine(W, 'Memory', { value: Memory, writable: true, configurable: true, enumerable: false });
ObjectDefine(W, 'compile', { value: function compile(source) { return PromiseResolve().then(() => new Module(source)); }, writable: true, configurable: true, enumerable: false });
ObjectDefine(W, 'instantiate', {
  value: function instantiate(source, imports) {
    return PromiseResolve().then(() => {
      if (source instanceof OModule) return new Instance(source, imports);
      const module = new Module(source);
      return { module, instance: new Instance(module, imports) };
    });
  },
  writable: true, configurable: true, enumerable: false,
});
delete W.compileStreaming;
delete W.instantiateStreaming;
// True when a memory of this run is (nearly) at its cap: code that grows in steps fails a step
// before the exact maximum, and then usually traps.
function wasmFull() {
  for (const entry of tracked) {
    try {
      if (ReflectApply(byteLengthGet, ReflectApply(memoryBufferGet, entry.memory, []), []) >= 0.9 * entry.maxBytes) return true;
    } catch (e) { /* a detached buffer: not full */ }
  }
  return false;
}

// --- calling the user's code --------------------------------------------------------------
let failRun = null;
function settle(value) {
  if (value === undefined) return { ok: true };
  let json;
  try {
    json = JSONStringify(value, (key, v) => (typeof v === 'bigint' ? (NumberIsSafeInteger(Number(v)) ? Number(v) : StringCtor(v)) : v));
  } catch (e) {
    return { ok: false, kind: 'output_invalid', name: 'TypeError', message: 'the return value cannot be turned into JSON: ' + safeString(e && e.message), stack: '' };
  }
  return json === undefined ? { ok: true } : { ok: true, json };
}
function safeString(value) {
  try { return StringCtor(value); } catch (e) { return '[unprintable]'; }
}
function failure(error) {
  frozenWriteHint(error);
  let name = 'Error';
  let message = '';
  let stack = '';
  try {
    if (error !== null && (typeof error === 'object' || typeof error === 'function')) {
      name = safeString(error.name);
      message = safeString(error.message);
      stack = typeof error.stack === 'string' ? error.stack : '';
    } else {
      name = 'Uncaught';
      message = safeString(error);
    }
  } catch (e) { message = '[unprintable error]'; }
  return { ok: false, kind: 'exception', name, message, stack, wasmFull: wasmFull() };
}
function runUser(fn) {
  return new PromiseCtor((resolve) => {
    failRun = (error) => resolve(failure(error));
    PromiseResolve()
      .then(fn)
      .then((value) => resolve(settle(value)), (error) => resolve(failure(error)));
  });
}
function callable(exported, what) {
  if (typeof exported === 'function') return exported;
  throw new TypeErrorCtor(what + ' is not a function: export a function (export default function (input) { … })');
}
function parseInput(inputJson) {
  return JSONParse(inputJson);
}
function toNumberArgs(input) {
  const args = input !== null && typeof input === 'object' && ArrayIsArray(input.args) ? input.args : [];
  return args.map((a) => (typeof a === 'number' ? a : Number(a)));
}
// --- a hardened context: many runs, one after another, nothing carried over -------------
let tainted = false;
let seed0 = 0x9e3779b9, seed1 = 0x243f6a88, seed2 = 0xb7e15162, seed3 = 0x85a308d3;
function rotl(x, k) { return (x << k) | (x >>> (32 - k)); }
// xoshiro128**: V8's own generator state would carry over from run to run in a shared context.
function next32() {
  const result = MathImul(rotl(MathImul(seed1, 5), 7), 9) >>> 0;
  const t = seed1 << 9;
  seed2 ^= seed0; seed3 ^= seed1; seed1 ^= seed2; seed0 ^= seed3; seed2 ^= t; seed3 = rotl(seed3, 11);
  return result;
}
let baseGlobals = null;
// The global object's writable properties and their values, as the reset puts them back.
const writableKeys = [];
const writableValues = [];
let baseProto = null;
let baseStackTraceLimit;
let basePrepareStackTrace;
// lockdown() puts its own Error constructor on the global object; its statics are what runs see.
let GlobalError = ErrorCtor;
function frozenWriteHint(error) {
  if (!hardened || !(error instanceof TypeErrorCtor)) return;
  const m = error.message;
  if (typeof m === 'string' && /not extensible|read[ -]only property|Cannot redefine property|Cannot delete property|Cannot assign to/.test(m)) {
    try {
      error.message = m + ' (built-in objects such as Object.prototype, Array.prototype, JSON and Math are frozen in the isolate backend, so that nothing one run changes reaches the next; set your own properties on globalThis or on your own objects)';
    } catch (e) { /* a frozen error object keeps its message */ }
  }
}
if (hardened) {
  const OFinalizationRegistry = g.FinalizationRegistry;
  const FinalizationRegistry = function FinalizationRegistry(cleanup) {
    if (new.target === undefined) throw new TypeErrorCtor("Constructor FinalizationRegistry requires 'new'");
    tainted = true;
    return ReflectConstruct(OFinalizationRegistry, [cleanup], new.target);
  };
  FinalizationRegistry.prototype = OFinalizationRegistry.prototype;
  ObjectDefine(OFinalizationRegistry.prototype, 'constructor', { value: FinalizationRegistry, writable: true, configurable: true, enumerable: false });
  ObjectDefine(g, 'FinalizationRegistry', { value: FinalizationRegistry, writable: true, configurable: true, enumerable: false });
  ObjectDefine(g.Math, 'random', {
    value: { random() { return ((next32() >>> 5) * 67108864 + (next32() >>> 6)) / 9007199254740992; } }.random,
    writable: true, configurable: true, enumerable: false,
  });
  // Non-standard, unknown to SES: one Intl class fewer to keep frozen.
  if (g.Intl !== undefined) ReflectDeleteProperty(g.Intl, 'v8BreakIterator');
  const lockdown = g.lockdown;
  if (typeof lockdown !== 'function') throw new TypeErrorCtor('SES is not loaded in this context');
  lockdown({ errorTaming: 'unsafe', consoleTaming: 'unsafe', evalTaming: 'unsafe-eval', overrideTaming: 'moderate', reporting: 'none' });
  const harden = g.harden;
  // SES's own entry points are no part of what user code may reach.
  for (const name of ['lockdown', 'harden', 'repairIntrinsics', 'Compartment', 'assert', 'HandledPromise', 'ModuleSource', 'StaticModuleRecord', 'getStackString']) ReflectDeleteProperty(g, name);
  for (const key of ReflectOwnKeys(g)) {
    if (typeof key === 'symbol') ReflectDeleteProperty(g, key);
  }
  // SES replaces Error with its own constructor, whose stackTraceLimit and prepareStackTrace
  // forward to V8's original Error. WebAssembly's error classes (unknown to SES) still inherit
  // from that original: hardening them would freeze it and make those two read-only.
  for (const name of ['CompileError', 'LinkError', 'RuntimeError']) {
    const C = W[name];
    if (typeof C === 'function' && ObjectGetProto(C) !== g.Error) Object.setPrototypeOf(C, g.Error);
  }
  // Intrinsics that no property path from the global object reaches, only objects that
  // built-ins return; SES does not know them. Each is hardened and walked below like the rest.
  // (A review found Intl.Segmenter's two: shared by every run, and mutable.)
  const hidden = [];
  if (g.Intl !== undefined && typeof g.Intl.Segmenter === 'function') {
    const segments = new g.Intl.Segmenter().segment('');
    hidden.push(ObjectGetProto(segments), ObjectGetProto(segments[Symbol.iterator]()));
  }
  for (const o of hidden) harden(o);
  harden(ObjectGetProto(g));
  for (const key of ReflectOwnKeys(g)) {
    const d = ObjectGetOwnDesc(g, key);
    if (d === undefined) continue;
    if (d.value !== g) harden(d.value);
    harden(d.get);
    harden(d.set);
  }
  // Everything reachable from the global object, except that object itself, must now be frozen.
  const seen = new SetCtor();
  const queue = [ObjectGetProto(g), ...hidden];
  for (const key of ReflectOwnKeys(g)) {
    const d = ObjectGetOwnDesc(g, key);
    queue.push(d.value, d.get, d.set);
  }
  while (queue.length > 0) {
    const o = queue.pop();
    if (o === null || o === g || (typeof o !== 'object' && typeof o !== 'function') || seen.has(o)) continue;
    seen.add(o);
    if (!ObjectIsFrozen(o)) throw new TypeErrorCtor('the hardened context has a mutable object reachable from its global object');
    for (const key of ReflectOwnKeys(o)) {
      const d = ObjectGetOwnDesc(o, key);
      queue.push(d.value, d.get, d.set);
    }
    queue.push(ObjectGetProto(o));
  }
  // The global object's own properties become non-configurable: a run may still assign them, but
  // not delete them or turn them into accessors, so that the reset puts them back with plain
  // writes (no descriptor per property per run) and a count of the keys finds any added one.
  baseGlobals = new MapCtor();
  for (const key of ReflectOwnKeys(g)) {
    const d = ObjectGetOwnDesc(g, key);
    if (d.configurable && !ReflectDefineProperty(g, key, { configurable: false })) throw new TypeErrorCtor('a global of the hardened context cannot be fixed');
    baseGlobals.set(key, d);
    if ('value' in d && d.writable) { writableKeys.push(key); writableValues.push(d.value); }
  }
  baseProto = ObjectGetProto(g);
  GlobalError = g.Error;
  baseStackTraceLimit = GlobalError.stackTraceLimit;
  basePrepareStackTrace = GlobalError.prepareStackTrace;
}
// Ends a run in a hardened context; answers true when nothing of it is left.
// More globals than this added by one run: the isolate is thrown away rather than cleaned, so
// that a run cannot hold the host's thread in a long reset.
const MAX_ADDED_GLOBALS = 1000;
function resetRun(seed) {
  let clean = !tainted && ObjectIsExtensible(g) && ObjectGetProto(g) === baseProto;
  // No base global can be deleted (all are non-configurable): more keys means added ones.
  const keys = ReflectOwnKeys(g);
  if (keys.length > baseGlobals.size + MAX_ADDED_GLOBALS) return false;
  if (keys.length !== baseGlobals.size) {
    for (let i = 0; i < keys.length; i++) {
      if (!baseGlobals.has(keys[i]) && !ReflectDeleteProperty(g, keys[i])) clean = false;
    }
  }
  // Own, non-configurable data properties: reading one runs nothing of the run's, nor does the
  // write, which calls no setter and fails only where a run made one read-only. Only the ones a
  // run changed are written (a read costs a fraction of Reflect.set's).
  for (let i = 0; i < writableKeys.length; i++) {
    const key = writableKeys[i];
    const value = writableValues[i];
    if (!ObjectIs(g[key], value) && !ReflectSet(g, key, value)) clean = false;
  }
  try {
    GlobalError.stackTraceLimit = baseStackTraceLimit;
    GlobalError.prepareStackTrace = basePrepareStackTrace;
    if (GlobalError.stackTraceLimit !== baseStackTraceLimit || GlobalError.prepareStackTrace !== basePrepareStackTrace) clean = false;
  } catch (e) { clean = false; }
  timers.clear();
  nextTimer = 1;
  generation++;
  sent[0] = sent[1] = sent[2] = 0;
  outputCap = 1048576;
  collecting = false;
  collected = [];
  pending = null;
  tracked.length = 0;
  pagesLeft = wasmPages;
  failRun = null;
  if (typeof seed === 'string' && seed.length === 32) {
    seed0 = +('0x' + seed.slice(0, 8)) | 0; seed1 = +('0x' + seed.slice(8, 16)) | 0;
    seed2 = +('0x' + seed.slice(16, 24)) | 0; seed3 = +('0x' + seed.slice(24, 32)) | 0;
    if ((seed0 | seed1 | seed2 | seed3) === 0) seed0 = 1;
  } else {
    clean = false;
  }
  return clean;
}
const NOT_CLEAN = { ok: false, kind: 'not_clean' };
// A synchronous run still waiting on the promise it returned, for 'await'.
let pending = null;
function exportedOf(factory) {
  const module = { exports: {} };
  ReflectApply(factory(), module.exports, [module.exports, module]);
  let exported = module.exports;
  if (typeof exported !== 'function' && exported !== null && typeof exported === 'object' && typeof exported.default === 'function') exported = exported.default;
  return callable(exported, 'module.exports');
}
// Runs a script job within this call and answers { out, answer, pending }. The host copies that
// object out only after the call's microtasks have run (isolated-vm copies a result once V8's
// call has returned, and V8 runs the microtasks as the outermost call returns), so \`out\` (fd,
// text, fd, text …) then holds what they printed too, and a promise they settled has set
// \`answer\`. \`pending\` stays true when the run's promise is still waiting: 'await' goes on.
function runSync(factory, inputJson) {
  collecting = true;
  collected = [];
  const run = { out: collected, answer: undefined, pending: false };
  let value;
  try {
    value = exportedOf(factory)(parseInput(inputJson));
  } catch (error) {
    run.answer = failure(error);
    return run;
  }
  let then;
  try {
    then = value !== null && (typeof value === 'object' || typeof value === 'function') ? value.then : undefined;
  } catch (error) {
    run.answer = failure(error);
    return run;
  }
  if (typeof then !== 'function') {
    run.answer = settle(value);
    return run;
  }
  run.pending = true;
  const promise = runUser(() => value);
  pending = promise;
  promise.then((answer) => {
    if (pending !== promise) return;
    run.answer = answer;
    run.pending = false;
    pending = null;
  });
  return run;
}
// Ends the synchronous part of a run the host found pending: sends what was printed after the
// host copied \`out\` (its first \`copied\` entries), and resolves to the run's answer.
function awaitRun(copied) {
  const late = collecting ? collected : [];
  collecting = false;
  collected = [];
  for (let i = typeof copied === 'number' ? copied : 0; i + 1 < late.length; i += 2) hostOut(late[i], late[i + 1], generation);
  const p = pending;
  pending = null;
  return p === null ? failure(new TypeErrorCtor('no run to wait for')) : p;
}
return function dispatch(op, target, inputJson, outputBytes, seed) {
  if (op === 'await') return awaitRun(target);
  // What a finished synchronous run's late work printed after its answer was copied out belongs
  // to no one now (the next run's output starts afresh): dropped.
  collecting = false;
  collected = [];
  if (op === 'fire') {
    if (inputJson !== generation) return;
    const timer = timers.get(target);
    if (timer === undefined) return;
    if (timer.repeat) hostTimer(target, timer.delay, generation); else timers.delete(target);
    try { ReflectApply(timer.fn, g, timer.args); } catch (error) { if (failRun !== null) failRun(error); }
    return;
  }
  if (op === 'reset' && hardened) return resetRun(target);
  // A run's own call resets what the last run left, first: none of its code runs before that.
  if (seed !== undefined && (!hardened || !resetRun(seed))) return NOT_CLEAN;
  outputCap = outputBytes;
  if (op === 'scriptSync') return runSync(target, inputJson);
  if (op === 'module') return runUser(() => callable(target.default, 'the default export')(parseInput(inputJson)));
  if (op === 'script') return runUser(() => exportedOf(target)(parseInput(inputJson)));
  if (op === 'wasm') {
    return runUser(() => {
      const module = new Module(target);
      const instance = new Instance(module, {});
      const main = instance.exports.main;
      if (typeof main !== 'function') throw new TypeErrorCtor('the WebAssembly module exports no function "main"');
      return main(...toNumberArgs(parseInput(inputJson)));
    });
  }
  throw new TypeErrorCtor('unknown operation ' + op);
};
})`;
