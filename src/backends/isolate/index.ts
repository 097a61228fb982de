export { createBackend } from './isolate-backend.js';
