/**
 * The error-code registry. Every error that crosses the API carries one of these codes;
 * the SDK rebuilds a typed error from it. Codes are stable: never rename one.
 *
 * Two families live here:
 * - API codes (`ApiErrorCode`): the HTTP answer to a request that could not be served.
 * - Workload codes (`WorkloadErrorCode`): why an accepted workload did not complete; they
 *   appear in a workload record's `error.code`, never as an HTTP status.
 */

/** What an API error code means for a caller. */
export interface ErrorCodeInfo {
  /** HTTP status the API answers with. */
  readonly status: number;
  /** True when the caller's request is at fault (a 4xx). */
  readonly userFault: boolean;
  /** True when the same request may succeed later. */
  readonly retryable: boolean;
}

/** API error codes, each with its HTTP status. */
export const API_ERROR_CODES = {
  invalid_request: { status: 400, userFault: true, retryable: false },
  invalid_path: { status: 400, userFault: true, retryable: false },
  unsupported_media_type: { status: 415, userFault: true, retryable: false },
  payload_too_large: { status: 413, userFault: true, retryable: false },
  unknown_runtime: { status: 422, userFault: true, retryable: false },
  unknown_isolation: { status: 422, userFault: true, retryable: false },
  unknown_image: { status: 422, userFault: true, retryable: false },
  limit_out_of_range: { status: 422, userFault: true, retryable: false },
  not_found: { status: 404, userFault: true, retryable: false },
  conflict: { status: 409, userFault: true, retryable: false },
  sandbox_destroyed: { status: 410, userFault: true, retryable: false },
  capacity_exhausted: { status: 429, userFault: false, retryable: true },
  backend_unavailable: { status: 503, userFault: false, retryable: true },
  internal: { status: 500, userFault: false, retryable: true },
} as const satisfies Record<string, ErrorCodeInfo>;

export type ApiErrorCode = keyof typeof API_ERROR_CODES;

/** Why an accepted workload did not complete. Stored in the record's `error.code`. */
export const WORKLOAD_ERROR_CODES = [
  /** The process exited with a non-zero code. */
  'nonzero_exit',
  /** The code threw (python exception, JS error); message and stack are in the record. */
  'exception',
  /** The sandbox went over `mem_mb`. */
  'memory_limit',
  /** The sandbox hit its process limit (a fork bomb). */
  'pids_limit',
  /** The sandbox's writable disk (/tmp, /work) filled up. */
  'disk_limit',
  /** The wall-clock timeout (`timeout_s`) passed; everything was killed. */
  'timeout',
  /** A client killed the workload (DELETE /v1/workloads/:id). */
  'killed',
  /** The sandbox host itself died (an isolate host crash, a VMM exit). */
  'sandbox_crashed',
  /** The server restarted while the workload ran; its sandbox died with it. */
  'host_restarted',
  /** The code's return value could not be turned into JSON. */
  'output_invalid',
  /** The backend failed for a reason that is not the code's fault. */
  'backend_error',
] as const;

export type WorkloadErrorCode = (typeof WORKLOAD_ERROR_CODES)[number];

/** The wire shape of an API error. */
export interface ApiErrorBody {
  error: { code: string; message: string; details?: unknown };
}

/**
 * The one base class for errors that carry a code. Throw it anywhere in the server; the HTTP
 * layer answers `{ error: { code, message, details } }` with the code's status.
 */
export class VulcanError extends Error {
  readonly code: ApiErrorCode;
  readonly details: unknown;

  constructor(code: ApiErrorCode, message: string, options: { details?: unknown; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'VulcanError';
    this.code = code;
    this.details = options.details;
  }

  /** The HTTP status for this error's code. */
  get status(): number {
    return API_ERROR_CODES[this.code].status;
  }

  toJSON(): ApiErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.details === undefined ? {} : { details: this.details }),
      },
    };
  }
}

/** True when `code` is a registered API error code. */
export function isApiErrorCode(code: string): code is ApiErrorCode {
  return Object.hasOwn(API_ERROR_CODES, code);
}

/** A workload's terminal error: a code and a message for people. */
export interface WorkloadError {
  code: WorkloadErrorCode;
  message: string;
}
