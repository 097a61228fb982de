# Vulcan's python runner, run inside the sandbox as: python3 runner.py ENTRY
# Reads the input from /vulcan/input.json, runs ENTRY, calls its main(input) when it has
# one, and reports on fd 3 as JSON lines: {"t":"ready"}, then {"t":"result","output":...}
# or {"t":"error","code":...,"message":...}. stdout and stderr stay the code's own.
import errno
import json
import os
import runpy
import sys
import traceback

RESULT_FD = 3
os.set_inheritable(RESULT_FD, False)


def send(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(RESULT_FD, data):]


def flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def classify(exc):
    if isinstance(exc, MemoryError):
        return "memory_limit"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_limit"
    if isinstance(exc, BlockingIOError) or (isinstance(exc, OSError) and exc.errno == errno.EAGAIN):
        return "pids_limit"
    return "exception"


def main():
    entry = sys.argv[1]
    send({"t": "ready"})
    with open("/vulcan/input.json", "rb") as f:
        value = json.load(f)
    sys.argv = [entry]
    sys.path.insert(0, os.path.dirname(entry))
    try:
        scope = runpy.run_path(entry, run_name="__main__")
        fn = scope.get("main")
        output = fn(value) if callable(fn) else None
    except SystemExit:
        flush()
        raise
    except BaseException as exc:  # noqa: BLE001 - everything the code raises is reported
        traceback.print_exc()
        flush()
        send({"t": "error", "code": classify(exc), "message": f"{type(exc).__name__}: {exc}"})
        os._exit(1)
    flush()
    try:
        text = json.dumps(output)
    except (TypeError, ValueError) as exc:
        send({"t": "error", "code": "output_invalid", "message": f"main() returned a value that is not JSON: {exc}"})
        os._exit(1)
    send({"t": "result", "output": json.loads(text)})


main()
