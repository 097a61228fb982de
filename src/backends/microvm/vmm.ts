/**
 * The VMM layer: the few things the microvm backend needs from a virtual machine monitor.
 * QEMU (`qemu.ts`) implements it today; Firecracker (REST over a unix socket, hybrid
 * vsock, snapshot load) can implement the same interface later without touching the
 * backend.
 */
import type { Duplex } from 'node:stream';

/** Hardware acceleration in use: KVM, or QEMU's software emulator. */
export type Accel = 'kvm' | 'tcg';

/** Everything needed to start one VM. */
export interface VmConfig {
  /** Unique id, also the VM's name tag (`vulcan-<id>`) for reconciliation. */
  readonly id: string;
  /** A private directory for the VM's sockets and pidfile; removed by `destroy()`. */
  readonly dir: string;
  readonly kernelPath: string;
  readonly initramfsPath: string;
  /** The read-only root filesystem image (erofs), attached as the first virtio disk. */
  readonly rootDiskPath: string;
  /** Guest RAM in MiB. */
  readonly memMB: number;
  readonly vcpus: number;
  /** Extra kernel command-line words (`name=value`). */
  readonly kernelArgs: readonly string[];
  /**
   * Back guest RAM with this file. `shared: true` writes through to the file (a snapshot
   * template); `shared: false` maps it copy-on-write (a clone of that template).
   */
  readonly memoryFile?: { readonly path: string; readonly shared: boolean };
  /** Restore device state from this file (written by `saveState`) instead of booting. */
  readonly restoreFrom?: string;
  /** Open a control channel, needed for `saveState` (implied by `restoreFrom`). */
  readonly control?: boolean;
  /** More read-only disks after the root one; the guest tells them apart by `serial`. */
  readonly extraDisks?: readonly { readonly path: string; readonly serial: string }[];
}

/** How a VM process ended. */
export interface VmExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A running VM. */
export interface VmHandle {
  readonly id: string;
  /** The VMM process id. */
  readonly pid: number;
  /** The host end of the agent channel (virtio-serial today, vsock later). */
  readonly channel: Duplex;
  /** Settles when the VMM process has exited. */
  readonly exited: Promise<VmExit>;
  /** The last few KiB of the serial console, for diagnostics. */
  consoleTail(): string;
  /**
   * Pauses the guest and saves its device state to `file` (guest RAM stays in the
   * `memoryFile`). Only for VMs started with `control` and a shared `memoryFile`.
   */
  saveState(file: string, signal: AbortSignal): Promise<void>;
  /** Kills the VMM and removes the VM's directory. Idempotent; resolves once all is gone. */
  destroy(): Promise<void>;
}

/** A virtual machine monitor. */
export interface Vmm {
  /** `qemu` (later `firecracker`). */
  readonly name: string;
  readonly accel: Accel;
  /** Starts a VM; resolves once the VMM runs and the agent channel is connected. */
  start(config: VmConfig, signal: AbortSignal): Promise<VmHandle>;
}
