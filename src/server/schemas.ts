/**
 * The HTTP API's schemas (TypeBox → JSON Schema): one definition gives request
 * validation, the OpenAPI document and the TypeScript types.
 */
import os from 'node:os';
import { Type, type Static } from 'typebox';
import { ISOLATIONS, RUNTIMES, WORKLOAD_STATUSES } from '../core/types.js';

/** Most bytes of inline `code`. */
export const MAX_CODE_BYTES = 1024 * 1024;
/** Most bytes of a whole request body. */
export const MAX_BODY_BYTES = 6 * 1024 * 1024;

export const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]*$';

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'Stable error code, e.g. invalid_request, limit_out_of_range' }),
      message: Type.String({ description: 'What went wrong and what to change' }),
      details: Type.Optional(Type.Unknown()),
    }),
  },
  { $id: 'Error' },
);

export const Resources = Type.Object(
  {
    cpus: Type.Optional(Type.Number({ minimum: 0.1, maximum: os.availableParallelism(), description: 'CPU quota in cores. Default 1.' })),
    mem_mb: Type.Optional(Type.Integer({ minimum: 16, maximum: Math.floor(os.totalmem() / 1048576), description: 'Memory cap in MiB, no swap. Default 256.' })),
    timeout_s: Type.Optional(Type.Number({ minimum: 1, maximum: 900, description: 'Wall-clock timeout in seconds. Default 30.' })),
  },
  { additionalProperties: false },
);

export const WorkloadRequest = Type.Object(
  {
    runtime: Type.Enum(RUNTIMES, { description: 'node | python | sh | js | ts | wasm | oci' }),
    isolation: Type.Optional(Type.Enum(ISOLATIONS, { description: 'auto (default) or a backend name' })),
    code: Type.Optional(Type.String({ description: 'Inline source, at most 1 MiB. For wasm, a base64 module.' })),
    code_archive: Type.Optional(Type.String({ description: 'base64 of a tar.gz; `entrypoint` names the file to run' })),
    entrypoint: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    input: Type.Optional(Type.Unknown({ description: 'Any JSON value; passed to main(input) / the default export / stdin' })),
    env: Type.Optional(
      Type.Record(Type.String({ pattern: ENV_NAME_PATTERN }), Type.String({ maxLength: 65536 }), {
        description: 'Environment variables for the code; names match [A-Za-z_][A-Za-z0-9_]*',
        additionalProperties: false,
      }),
    ),
    resources: Type.Optional(Resources),
    image: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'An image from the store (backends with images)' })),
    cmd: Type.Optional(Type.Array(Type.String(), { minItems: 1, description: 'argv for runtime oci' })),
  },
  { additionalProperties: false },
);
export type WorkloadRequestBody = Static<typeof WorkloadRequest>;

export const Workload = Type.Object(
  {
    id: Type.String(),
    status: Type.Enum(WORKLOAD_STATUSES),
    mode: Type.Union([Type.Literal('sync'), Type.Literal('async')]),
    isolation: Type.String({ description: 'As requested' }),
    isolation_used: Type.Union([Type.String(), Type.Null()], { description: 'The backend that ran it' }),
    isolation_reason: Type.Union([Type.String(), Type.Null()], { description: 'Why that backend' }),
    runtime: Type.String(),
    node: Type.String(),
    output: Type.Unknown({ description: 'The return value, or null' }),
    stdout: Type.String(),
    stderr: Type.String(),
    stdout_truncated: Type.Boolean(),
    stderr_truncated: Type.Boolean(),
    exit_code: Type.Union([Type.Integer(), Type.Null()]),
    error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
    duration_ms: Type.Union([Type.Number(), Type.Null()], { description: 'From the start of the run to its end, excluding time queued' }),
    timings: Type.Object({
      start_ms: Type.Union([Type.Number(), Type.Null()], { description: 'Sandbox start until the code began' }),
      exec_ms: Type.Union([Type.Number(), Type.Null()], { description: 'The code running' }),
    }),
    resources: Type.Object({ cpus: Type.Number(), mem_mb: Type.Number(), timeout_s: Type.Number() }),
    created_at: Type.String(),
    started_at: Type.Union([Type.String(), Type.Null()]),
    finished_at: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: 'Workload' },
);

export const WorkloadAccepted = Type.Object({ id: Type.String(), status: Type.String() });

export const WorkloadList = Type.Object({
  items: Type.Array(Type.Ref('Workload')),
  next_cursor: Type.Union([Type.String(), Type.Null()], { description: 'Pass as `cursor` for the next page' }),
});

export const ListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 50 })),
    cursor: Type.Optional(Type.String({ maxLength: 64 })),
    status: Type.Optional(Type.Enum(WORKLOAD_STATUSES)),
  },
  { additionalProperties: false },
);

export const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });

export const BackendList = Type.Object({
  backends: Type.Array(
    Type.Object({
      name: Type.String(),
      available: Type.Boolean(),
      reason: Type.Optional(Type.String()),
      isolation: Type.String(),
      runtimes: Type.Array(Type.String()),
      capabilities: Type.Record(Type.String(), Type.Boolean()),
      info: Type.Optional(Type.Record(Type.String(), Type.String())),
    }),
  ),
});
