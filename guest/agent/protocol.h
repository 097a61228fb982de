/*
 * Vulcan's host <-> guest agent protocol. The host side lives in
 * src/backends/microvm/protocol.ts; keep both in step (PROTOCOL_VERSION).
 *
 * A frame is: u32 length (big endian, counts everything after itself)
 *             u8  type
 *             u32 run id (big endian; 0 for HELLO, the RUN frame's id afterwards)
 *             payload (length - 5 bytes)
 *
 * RUN's payload is a list of fields: u8 tag, u32 length (big endian), bytes.
 */
#ifndef VULCAN_PROTOCOL_H
#define VULCAN_PROTOCOL_H

#define PROTOCOL_VERSION 1

#define FRAME_HEADER_BYTES 9 /* u32 length + u8 type + u32 run id */

/* Bounds: the guest never sends a frame above GUEST_MAX_FRAME; the host never sends above HOST_MAX_FRAME. */
#define GUEST_MAX_FRAME (64 * 1024)
#define HOST_MAX_FRAME (16 * 1024 * 1024)
/* The runner's result channel (fd 3) is forwarded up to this many bytes in total. */
#define RESULT_MAX_BYTES (2 * 1024 * 1024)

/* guest -> host */
#define T_HELLO 1   /* payload: "vulcan-agent <version> <uname -r>" */
#define T_STARTED 2 /* the workload's process was forked; payload empty */
#define T_STDOUT 3  /* payload: bytes */
#define T_STDERR 4  /* payload: bytes */
#define T_RESULT 5  /* payload: bytes of the runner's fd 3 (JSON lines), in order */
#define T_EXIT 6    /* payload: u32 exit code (0xffffffff: killed by a signal), u32 signal, u32 flags (X_*), u32 exec ms; big endian */
#define T_FAULT 7   /* payload: text; the agent could not run the workload */

/* host -> guest */
#define T_RUN 16

/*
 * Sandbox mode (kernel argument vulcan_mode=sandbox): the agent starts the Node sandbox
 * agent and multiplexes byte-stream channels to its unix socket over the port. The run-id
 * field carries the channel id (0 for MUX_HELLO/MUX_READY/AGENT_EXIT). Each side may have
 * at most MUX_WINDOW unacknowledged bytes in flight per channel; the receiver grants more
 * with WINDOW as it delivers. Every frame is at most MUX_MAX_FRAME bytes (one port write).
 */
#define T_MUX_READY 8   /* guest -> host: payload = the host's 8-byte nonce */
#define T_G_OPENED 9    /* the channel is connected to the agent */
#define T_G_DATA 10     /* bytes from the agent */
#define T_G_EOF 11      /* the agent half-closed */
#define T_G_CLOSE 12    /* the channel is gone; payload: why (empty after a clean end) */
#define T_G_WINDOW 13   /* u32: the host may send this many more bytes */
#define T_G_AGENT_EXIT 14 /* u32 wait status of the Node agent */
#define T_MUX_HELLO 17  /* host -> guest: 8-byte nonce; every channel is dropped */
#define T_OPEN 18
#define T_DATA 19
#define T_EOF 20
#define T_CLOSE 21
#define T_WINDOW 22
#define MUX_WINDOW (256 * 1024)
#define MUX_MAX_FRAME (32 * 1024)
#define MUX_MAX_CHANNELS 256

/* RUN fields */
#define F_ARG 1    /* one argv entry (repeated) */
#define F_ENV 2    /* one NAME=value (repeated) */
#define F_CWD 3    /* working directory inside the root */
#define F_FILE 4   /* u32 mode, u16 path length, path, content: a file to create inside the root */
#define F_STDIN 5  /* bytes fed to the process's stdin */
#define F_LIMITS 6 /* u32 mem MiB, u32 pids max, u32 disk MiB, u32 uid */
#define F_SEED 7   /* random bytes mixed into the guest's entropy pool */

/* EXIT flags */
#define X_OOM 1       /* the workload's cgroup saw an OOM kill */
#define X_PIDS 2      /* the workload's cgroup hit pids.max */
#define X_DISK_FULL 4 /* the writable layer was full at exit */
#define X_RESULT_TRUNCATED 8

#endif
