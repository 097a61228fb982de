/** The Vulcan SDK's public surface. */
export { VulcanClient, DEFAULT_URL } from './client.js';
export type { VulcanClientOptions, CallOptions, LogEvent, WorkloadRecord, WorkloadRequest, BackendInfo } from './client.js';
export { VulcanApiError, InvalidRequestError, NotFoundError, ConflictError, UnavailableError } from './errors.js';
