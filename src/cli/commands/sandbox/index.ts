/**
 * `vulcan sandbox …`: long-lived sandboxes, through the SDK (`VULCAN_URL`).
 */
import type { Command } from 'commander';
import { registerSandboxCp } from './cp.js';
import { registerSandboxCreate } from './create.js';
import { registerSandboxExec } from './exec.js';
import { registerSandboxLifecycle } from './lifecycle.js';
import { registerSandboxLs } from './ls.js';
import { registerSandboxShell } from './shell.js';

export function registerSandbox(program: Command): void {
  const sandbox = program.command('sandbox').description('long-lived sandboxes: create, ls, exec, cp, shell, pause, resume, timeout, rm');
  registerSandboxCreate(sandbox);
  registerSandboxLs(sandbox);
  registerSandboxExec(sandbox);
  registerSandboxCp(sandbox);
  registerSandboxShell(sandbox);
  registerSandboxLifecycle(sandbox);
}
