/** The Vulcan SDK's public surface. */
export { VulcanClient, DEFAULT_URL } from './client.js';
export type { VulcanClientOptions, CallOptions, LogEvent, WorkloadRecord, WorkloadRequest, BackendInfo, ImageSummary, ImageJobAccepted } from './client.js';
export { VulcanApiError, InvalidRequestError, NotFoundError, ConflictError, UnavailableError } from './errors.js';
export { Sandbox, SandboxFiles, SandboxDestroyedError } from './sandbox.js';
export type { SandboxCreateOptions, SandboxRecord, ExecOptions, ExecResult, ExecEvent, FileEntry } from './sandbox.js';
