/**
 * Errors the SDK throws. The server's `{ error: { code, message, details } }` comes back as
 * a `VulcanApiError` (or the subclass for its code), so callers can `instanceof` them.
 */

export class VulcanApiError extends Error {
  constructor(
    /** The API's error code, or `connection_failed` when no answer came. */
    readonly code: string,
    message: string,
    /** HTTP status (0 when no answer came). */
    readonly status: number,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'VulcanApiError';
  }
}

/** 400/413/415/422: the request must change. */
export class InvalidRequestError extends VulcanApiError {
  override name = 'InvalidRequestError';
}
/** 404. */
export class NotFoundError extends VulcanApiError {
  override name = 'NotFoundError';
}
/** 409: e.g. killing a workload that has ended. */
export class ConflictError extends VulcanApiError {
  override name = 'ConflictError';
}
/** 503/429: the node cannot run it now; a retry may help. */
export class UnavailableError extends VulcanApiError {
  override name = 'UnavailableError';
}

const CLASSES: Record<string, typeof VulcanApiError> = {
  invalid_request: InvalidRequestError,
  invalid_path: InvalidRequestError,
  unsupported_media_type: InvalidRequestError,
  payload_too_large: InvalidRequestError,
  unknown_runtime: InvalidRequestError,
  unknown_isolation: InvalidRequestError,
  unknown_image: InvalidRequestError,
  limit_out_of_range: InvalidRequestError,
  not_found: NotFoundError,
  conflict: ConflictError,
  backend_unavailable: UnavailableError,
  capacity_exhausted: UnavailableError,
};

/** Rebuilds a typed error from an API error body. */
export function errorFromBody(body: unknown, status: number): VulcanApiError {
  const e = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | null)?.error;
  if (e && typeof e.code === 'string') {
    const Cls = CLASSES[e.code] ?? VulcanApiError;
    return new Cls(e.code, typeof e.message === 'string' ? e.message : e.code, status, e.details);
  }
  return new VulcanApiError('http_error', `HTTP ${status}: ${typeof body === 'string' ? body.slice(0, 200) : 'no error body'}`, status);
}
