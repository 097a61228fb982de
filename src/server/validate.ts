/**
 * Turns a schema-checked workload request into a `RunSpec`: the checks a schema cannot
 * express (exactly one of code and code_archive, the archive's contents, byte sizes, the
 * input's JSON size, limit ranges with messages that name the field).
 */
import type { CodeSource, RunSpec } from '../core/backend.js';
import { sha256 } from '../core/hash.js';
import { VulcanError } from '../core/errors.js';
import { resolveLimits, type Limits } from '../core/limits.js';
import type { Isolation } from '../core/types.js';
import { checkArchive } from './archive.js';
import { MAX_CODE_BYTES, type WorkloadRequestBody } from './schemas.js';

export interface ValidatedWorkload {
  readonly spec: RunSpec;
  readonly isolation: Isolation;
  readonly inputHash: string;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function invalid(field: string, message: string): never {
  throw new VulcanError('invalid_request', message, { details: { field } });
}

/** Validates `body` (already schema-checked) into a spec with id `id`. */
export async function validateWorkload(id: string, body: WorkloadRequestBody, defaults: Limits): Promise<ValidatedWorkload> {
  const limits = resolveLimits(body.resources, defaults);
  const { runtime } = body;
  let code: CodeSource | undefined;
  if (body.code !== undefined && body.code_archive !== undefined) invalid('code', 'send either code or code_archive, not both');
  if (runtime === 'oci') {
    if (body.code !== undefined || body.code_archive !== undefined) invalid('code', 'runtime oci runs `cmd` in `image`; drop code and code_archive');
    if (body.image === undefined) invalid('image', 'runtime oci needs `image` (a name from the image store)');
    if (body.cmd === undefined) invalid('cmd', 'runtime oci needs `cmd`, an argv such as ["echo","hi"]');
  } else if (body.code !== undefined) {
    if (body.code.length === 0) invalid('code', 'code is empty');
    if (Buffer.byteLength(body.code) > MAX_CODE_BYTES) {
      throw new VulcanError('payload_too_large', `code is larger than ${MAX_CODE_BYTES} bytes; send a code_archive instead`, { details: { field: 'code' } });
    }
    if (body.entrypoint !== undefined) invalid('entrypoint', 'entrypoint goes with code_archive, not code');
    code = { kind: 'inline', source: body.code };
  } else if (body.code_archive !== undefined) {
    if (body.entrypoint === undefined) invalid('entrypoint', 'code_archive needs `entrypoint`, the file in it to run');
    if (!BASE64.test(body.code_archive)) invalid('code_archive', 'code_archive must be base64');
    const tarGz = Buffer.from(body.code_archive, 'base64');
    const entrypoint = await checkArchive(tarGz, body.entrypoint, limits.diskMB * 1024 * 1024);
    code = { kind: 'archive', tarGz, entrypoint };
  } else {
    invalid('code', 'send `code` (inline source) or `code_archive` (base64 tar.gz with `entrypoint`)');
  }
  if (body.cmd !== undefined && runtime !== 'oci') invalid('cmd', '`cmd` goes with runtime oci');
  const inputJson = JSON.stringify(body.input === undefined ? null : body.input);
  const spec: RunSpec = {
    id,
    runtime,
    ...(code === undefined ? {} : { code }),
    inputJson,
    env: body.env ?? {},
    limits,
    ...(body.image === undefined ? {} : { image: body.image }),
    ...(body.cmd === undefined ? {} : { cmd: body.cmd }),
  };
  return { spec, isolation: body.isolation ?? 'auto', inputHash: sha256(inputJson) };
}
