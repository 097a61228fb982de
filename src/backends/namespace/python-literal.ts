/**
 * The workload's input as a Python literal, so the python runner can read it with the
 * compiler built into the interpreter instead of importing `json` (whose import costs about
 * 10 ms of every cold start). JSON's escapes in strings mean the same in Python.
 */

/** Python's tokenizer allows 200 nested brackets; stay well below. */
const MAX_DEPTH = 100;

function lit(v: unknown, depth: number): string | null {
  if (depth > MAX_DEPTH) return null;
  if (v === null) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'number') return Number.isFinite(v) ? JSON.stringify(v) : null;
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) {
    const items: string[] = [];
    for (const x of v) {
      const s = lit(x, depth + 1);
      if (s === null) return null;
      items.push(s);
    }
    return `[${items.join(',')}]`;
  }
  if (typeof v === 'object') {
    const items: string[] = [];
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      const s = lit(x, depth + 1);
      if (s === null) return null;
      items.push(`${JSON.stringify(k)}:${s}`);
    }
    return `{${items.join(',')}}`;
  }
  return null;
}

/** The Python literal of JSON text, or null when it is too deep for Python's parser. */
export function jsonToPythonLiteral(jsonText: string): string | null {
  return lit(JSON.parse(jsonText), 0);
}
