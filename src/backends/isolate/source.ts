/**
 * What the isolate backend does to code before it runs: TypeScript to JavaScript (sucrase;
 * types are stripped, never checked), base64 to Wasm bytes, and a parse (acorn) that finds the
 * module format and what the code would need from Node. Runs in the API server, on text only:
 * nothing here evaluates the code. Results are cached by the hash of the source.
 */
import { sha256 } from '../../core/hash.js';
import { builtinModules } from 'node:module';
import { parse, type Node as AcornNode } from 'acorn';
import sucrase from 'sucrase';
import type { Runtime } from '../../core/types.js';
import { COMMONJS_HEAD, COMMONJS_TAIL, wrapCommonJs } from './protocol.js';

/** How the host runs the code. */
export type CodeFormat = 'module' | 'script' | 'wasm';

/** Code ready for the host, or why it cannot be. */
export type PreparedCode =
  | {
      readonly ok: true;
      readonly format: CodeFormat;
      readonly source?: string;
      readonly wasm?: Uint8Array;
      /** sha256 (hex) of what runs. */
      readonly codeHash: string;
    }
  | { readonly ok: false; readonly message: string };

/** What a JavaScript parse found. */
export interface JsAnalysis {
  /** `module` when the code uses `import`/`export` or top-level `await`; `script` for CommonJS style. */
  readonly format: 'module' | 'script';
  /** Specifiers the code imports or requires (static imports, `import('x')`, `require('x')`). */
  readonly imports: readonly string[];
  /** True when it loads something by a computed name (`import(x)`, `require(x)`). */
  readonly computedLoads: boolean;
  /** Node-only globals it uses as free names (`process`, `Buffer`, `require`, …). */
  readonly nodeGlobals: readonly string[];
  /**
   * For a module whose only module syntax is `export default` of a function or arrow literal:
   * the same code as a strict-mode script that sets `module.exports = { default: … }`. The host
   * caches a compiled script per isolate and runs it in each new context, where a module must be
   * compiled, instantiated and evaluated again every run (≈ 0.7 ms of a warm start, measured).
   * Lines are kept; only that line's columns move.
   */
  readonly scriptSource?: string;
}

const NODE_GLOBALS = new Set(['process', 'Buffer', 'require', '__dirname', '__filename', 'global', 'setImmediate', 'clearImmediate', 'Deno', 'Bun']);
const BUILTINS = new Set(builtinModules);

/** True for `fs`, `node:fs`, `fs/promises` and the like. */
export function isNodeBuiltin(specifier: string): boolean {
  return specifier.startsWith('node:') || BUILTINS.has(specifier) || BUILTINS.has(specifier.split('/')[0] ?? '');
}

type AnyNode = AcornNode & Record<string, unknown>;

function isNode(value: unknown): value is AnyNode {
  return value !== null && typeof value === 'object' && typeof (value as { type?: unknown }).type === 'string';
}

function patternNames(node: unknown, into: Set<string>): void {
  if (!isNode(node)) return;
  switch (node.type) {
    case 'Identifier':
      into.add(node.name as string);
      return;
    case 'ObjectPattern':
      for (const p of node.properties as AnyNode[]) patternNames(p.type === 'RestElement' ? p.argument : p.value, into);
      return;
    case 'ArrayPattern':
      for (const e of node.elements as unknown[]) patternNames(e, into);
      return;
    case 'RestElement':
      patternNames(node.argument, into);
      return;
    case 'AssignmentPattern':
      patternNames(node.left, into);
      return;
    default:
      return;
  }
}

function stringLiteral(node: unknown): string | undefined {
  if (!isNode(node)) return undefined;
  if (node.type === 'Literal' && typeof node.value === 'string') return node.value;
  if (node.type === 'TemplateLiteral' && (node.expressions as unknown[]).length === 0) {
    const quasi = (node.quasis as AnyNode[])[0];
    const cooked = (quasi?.value as { cooked?: unknown } | undefined)?.cooked;
    return typeof cooked === 'string' ? cooked : undefined;
  }
  return undefined;
}

/** Parses JavaScript and reports its format and what it needs from Node. Throws a SyntaxError when it does not parse. */
export function analyzeJs(source: string): JsAnalysis {
  let ast: AnyNode;
  let parsedAsScript = false;
  try {
    ast = parse(source, { ecmaVersion: 'latest', sourceType: 'module', allowHashBang: true, allowAwaitOutsideFunction: false }) as unknown as AnyNode;
  } catch (moduleError) {
    // Sloppy-mode code (`with`, legacy octals) parses only as a script.
    try {
      ast = parse(source, { ecmaVersion: 'latest', sourceType: 'script', allowHashBang: true, allowReturnOutsideFunction: true }) as unknown as AnyNode;
      parsedAsScript = true;
    } catch {
      throw moduleError;
    }
  }
  const imports = new Set<string>();
  const declared = new Set<string>();
  const referenced = new Set<string>();
  let computedLoads = false;
  let hasModuleSyntax = false;
  let topLevelAwait = false;
  // What would make the module behave differently as a script (see `scriptSource`).
  let otherModuleSyntax = false;
  let dynamicImport = false;
  let metaProperty = false;
  let thisOutsideFunctions = false;
  const defaults: AnyNode[] = [];

  const visit = (node: AnyNode, parent: AnyNode | null, key: string, fnDepth: number, thisDepth: number): void => {
    switch (node.type) {
      case 'ThisExpression':
        if (thisDepth === 0) thisOutsideFunctions = true;
        break;
      case 'MetaProperty':
        metaProperty = true;
        break;
      default:
        break;
    }
    switch (node.type) {
      case 'ImportDeclaration':
      case 'ExportAllDeclaration':
      case 'ExportNamedDeclaration': {
        hasModuleSyntax = true;
        otherModuleSyntax = true;
        const from = stringLiteral(node.source);
        if (from !== undefined) imports.add(from);
        break;
      }
      case 'ExportDefaultDeclaration':
        hasModuleSyntax = true;
        if (parent?.type === 'Program') defaults.push(node);
        else otherModuleSyntax = true;
        break;
      case 'ImportExpression': {
        dynamicImport = true;
        const from = stringLiteral(node.source);
        if (from === undefined) computedLoads = true;
        else imports.add(from);
        break;
      }
      case 'CallExpression': {
        const callee = node.callee;
        if (isNode(callee) && callee.type === 'Identifier' && callee.name === 'require') {
          const from = stringLiteral((node.arguments as unknown[])[0]);
          if (from === undefined) computedLoads = true;
          else imports.add(from);
        }
        break;
      }
      case 'AwaitExpression':
      case 'ForOfStatement':
        if (fnDepth === 0 && (node.type === 'AwaitExpression' || node.await === true)) topLevelAwait = true;
        break;
      case 'VariableDeclarator':
        patternNames(node.id, declared);
        break;
      case 'FunctionDeclaration':
      case 'FunctionExpression':
      case 'ArrowFunctionExpression':
      case 'ClassDeclaration':
      case 'ClassExpression':
        if (isNode(node.id)) declared.add(node.id.name as string);
        for (const p of (node.params as unknown[] | undefined) ?? []) patternNames(p, declared);
        break;
      case 'CatchClause':
        patternNames(node.param, declared);
        break;
      case 'ImportSpecifier':
      case 'ImportDefaultSpecifier':
      case 'ImportNamespaceSpecifier':
        patternNames(node.local, declared);
        break;
      case 'Identifier': {
        const isPropertyName =
          parent !== null &&
          (((parent.type === 'MemberExpression' && key === 'property') ||
            ((parent.type === 'Property' || parent.type === 'MethodDefinition' || parent.type === 'PropertyDefinition') && key === 'key')) &&
            parent.computed !== true);
        const isLabel = parent !== null && key === 'label';
        if (!isPropertyName && !isLabel) referenced.add(node.name as string);
        break;
      }
      default:
        break;
    }
    const inner = node.type.includes('Function') ? fnDepth + 1 : fnDepth;
    // Arrows see the enclosing `this`; functions and class bodies have their own.
    const innerThis = node.type === 'FunctionDeclaration' || node.type === 'FunctionExpression' || node.type === 'ClassBody' ? thisDepth + 1 : thisDepth;
    for (const k of Object.keys(node)) {
      if (k === 'type' || k === 'start' || k === 'end' || k === 'loc' || k === 'range') continue;
      const value = node[k];
      if (Array.isArray(value)) {
        for (const child of value) if (isNode(child)) visit(child, node, k, inner, innerThis);
      } else if (isNode(value)) {
        visit(value, node, k, inner, innerThis);
      }
    }
  };
  visit(ast, null, '', 0, 0);

  const nodeGlobals = [...referenced].filter((name) => NODE_GLOBALS.has(name) && !declared.has(name)).sort();
  const usesCommonJs = !declared.has('module') && !declared.has('exports') && (referenced.has('module') || referenced.has('exports'));
  const format = parsedAsScript || (!hasModuleSyntax && !topLevelAwait && usesCommonJs) ? 'script' : 'module';
  const analysis = { format, imports: [...imports].sort(), computedLoads, nodeGlobals } as const;
  const only = defaults.length === 1 ? defaults[0] : undefined;
  const scriptable =
    format === 'module' &&
    only !== undefined &&
    !otherModuleSyntax &&
    !topLevelAwait &&
    !dynamicImport &&
    !metaProperty &&
    !thisOutsideFunctions &&
    !source.startsWith('#!') &&
    // A script reads these as comments, a module does not.
    !source.includes('<!--') &&
    !source.includes('-->') &&
    !['module', 'exports', 'arguments'].some((name) => referenced.has(name) || declared.has(name));
  const scriptSource = scriptable ? defaultExportAsScript(source, only) : undefined;
  return scriptSource === undefined ? analysis : { ...analysis, scriptSource };
}

/**
 * `export default <function or arrow literal>` → `module.exports = { default: <it> };`, in strict
 * mode like the module was. The object literal gives an anonymous function the name `default`,
 * as the export did. Anything else (a named declaration, a value) stays a module.
 */
function defaultExportAsScript(source: string, node: AnyNode): string | undefined {
  const decl = node.declaration;
  if (!isNode(decl)) return undefined;
  const literal = decl.type === 'ArrowFunctionExpression' || decl.type === 'FunctionExpression' || (decl.type === 'FunctionDeclaration' && decl.id === null);
  if (!literal) return undefined;
  // The statement's own text (parentheses and comments included), without `export default` and
  // its closing semicolon; no line is added or removed.
  const head = /^export\s+default\b/.exec(source.slice(node.start, node.end));
  if (head === null) return undefined;
  const value = source.slice(node.start + head[0].length, node.end).replace(/;$/, '');
  return `'use strict';${source.slice(0, node.start)}module.exports = { default:${value} };${source.slice(node.end)}`;
}

/**
 * Whether `source`, put in the host's CommonJS wrapper (protocol.ts `wrapCommonJs`) and read as
 * a classic script the way V8 will compile it, stays inside the wrapper: the whole text must be
 * one expression statement, the factory, whose one statement returns the code's function, and
 * that function must span the source exactly. A script reads `<!--` and `-->` as comments where a
 * module does not, so code that parses as a module could otherwise close the wrapper early and
 * run at the top level when the wrapper is evaluated.
 */
export function wrapsWhole(source: string): boolean {
  const wrapped = wrapCommonJs(source);
  try {
    const program = parse(wrapped, { ecmaVersion: 'latest', sourceType: 'script' }) as unknown as AnyNode;
    const body = program.body as AnyNode[];
    const only = body.length === 1 ? body[0] : undefined;
    const factory = only?.type === 'ExpressionStatement' && isNode(only.expression) ? only.expression : undefined;
    if (factory?.type !== 'FunctionExpression' || factory.start !== 1 || factory.end !== wrapped.length - 1) return false;
    const block = isNode(factory.body) ? factory.body : undefined;
    const statements = block?.type === 'BlockStatement' ? (block.body as AnyNode[]) : [];
    const ret = statements.length === 1 ? statements[0] : undefined;
    const inner = ret?.type === 'ReturnStatement' && isNode(ret.argument) ? ret.argument : undefined;
    // The code's own function must span the source exactly: from the head to the tail.
    return (
      inner?.type === 'FunctionExpression' &&
      inner.start === COMMONJS_HEAD.indexOf('function (exports') &&
      inner.end === wrapped.length - COMMONJS_TAIL.length + COMMONJS_TAIL.indexOf(';')
    );
  } catch {
    // Only code that parsed (as a module or a script) is asked; failing here means the wrapper
    // changed how it reads.
    return false;
  }
}

/** Turns TypeScript into JavaScript, dropping types without checking them. Throws a SyntaxError when it does not parse. */
export function transpileTs(source: string): string {
  return sucrase.transform(source, { transforms: ['typescript'], disableESTransforms: true }).code;
}

const BASE64 = /^[A-Za-z0-9+/\s]*={0,2}\s*$/;
const WASM_MAGIC = [0x00, 0x61, 0x73, 0x6d];

function syntaxMessage(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** Sources up to this length key the caches as they are (a Map hashes them faster than sha256); longer ones by their sha256. */
const KEY_AS_IS_MAX = 4096;

function cacheKey(source: string): string {
  return source.length <= KEY_AS_IS_MAX ? source : `sha256:${sha256(source)}`;
}

/** Caches prepared code by (runtime, source). */
export class CodePreparer {
  private readonly cache = new Map<string, PreparedCode>();
  private readonly analyses = new Map<string, JsAnalysis | { error: string }>();

  constructor(private readonly maxEntries = 256) {}

  /** Analyses JavaScript (cached), or says why it does not parse. */
  analyze(source: string): JsAnalysis | { error: string } {
    const key = cacheKey(source);
    const hit = this.analyses.get(key);
    if (hit !== undefined) return this.bump(this.analyses, key, hit);
    let result: JsAnalysis | { error: string };
    try {
      result = analyzeJs(source);
    } catch (error) {
      result = { error: syntaxMessage(error) };
    }
    return this.store(this.analyses, key, result);
  }

  /** Prepares inline code of `runtime` for the host (cached). */
  prepare(runtime: Runtime, source: string): PreparedCode {
    const key = `${runtime}\0${cacheKey(source)}`;
    const hit = this.cache.get(key);
    if (hit !== undefined) return this.bump(this.cache, key, hit);
    return this.store(this.cache, key, this.prepareUncached(runtime, source));
  }

  private prepareUncached(runtime: Runtime, source: string): PreparedCode {
    if (runtime === 'wasm') {
      if (!BASE64.test(source)) return { ok: false, message: 'code must be the base64 of a WebAssembly module for runtime "wasm"' };
      const bytes = new Uint8Array(Buffer.from(source, 'base64'));
      if (bytes.length < 8 || WASM_MAGIC.some((b, i) => bytes[i] !== b)) {
        return { ok: false, message: 'code is not a WebAssembly module (no \\0asm header after base64 decoding)' };
      }
      return { ok: true, format: 'wasm', wasm: bytes, codeHash: sha256(bytes) };
    }
    let js = source;
    if (runtime === 'ts') {
      try {
        js = transpileTs(source);
      } catch (error) {
        return { ok: false, message: syntaxMessage(error) };
      }
    }
    const analysis = this.analyze(js);
    // A parse error is the code's own: V8 reports it with its position when the module compiles.
    if (!('error' in analysis) && analysis.scriptSource !== undefined && wrapsWhole(analysis.scriptSource)) {
      return { ok: true, format: 'script', source: analysis.scriptSource, codeHash: sha256(`script\0${analysis.scriptSource}`) };
    }
    // (A scriptSource is only made for module code: one that failed wrapsWhole stays a module.)
    const format = 'error' in analysis ? 'module' : analysis.format;
    if (format === 'script' && !wrapsWhole(js)) {
      return {
        ok: false,
        message:
          'the code reads differently as a script than as a module (an HTML-like comment, `<!--` or `-->`, outside a string): remove it, or use `export default` instead of `module.exports`',
      };
    }
    return { ok: true, format, source: js, codeHash: sha256(`${format}\0${js}`) };
  }

  private bump<T>(map: Map<string, T>, key: string, value: T): T {
    map.delete(key);
    map.set(key, value);
    return value;
  }

  private store<T>(map: Map<string, T>, key: string, value: T): T {
    map.set(key, value);
    while (map.size > this.maxEntries) map.delete(map.keys().next().value as string);
    return value;
  }
}
