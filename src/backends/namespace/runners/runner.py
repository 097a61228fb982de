# Vulcan's python runner, run inside the sandbox as: python3 -I -S runner.py ENTRY
# Reads the input (/vulcan/input.py, a Python literal the server wrote, or /vulcan/input.json),
# runs ENTRY as __main__, calls its main(input) when it has one, and reports on fd 3 as JSON
# lines: {"t":"ready"}, then {"t":"result","output":...} or {"t":"error","code":...,"message":...}.
# stdout and stderr stay the code's own.
#
# Start-up cost matters here (it is most of a cold start), so the happy path imports
# nothing: `json` pulls in `re` and `enum` (~10 ms), `runpy` and `traceback` more. They are
# imported only when needed.
import os
import sys

RESULT_FD = 3
os.set_inheritable(RESULT_FD, False)
# -S skips site; keep Debian's system packages importable.
for _p in ("/usr/local/lib/python3.%d/dist-packages" % sys.version_info[1], "/usr/lib/python3/dist-packages"):
    if os.path.isdir(_p):
        sys.path.append(_p)


def send(text):
    data = (text + "\n").encode("utf-8")
    while data:
        data = data[os.write(RESULT_FD, data):]


_ESCAPES = {i: "\\u%04x" % i for i in range(32)}
_ESCAPES.update({34: '\\"', 92: "\\\\", 10: "\\n", 13: "\\r", 9: "\\t"})
_INF = float("inf")


def dumps(v):
    """JSON for plain data (dict with str keys, list, tuple, str, int, float, bool, None);
    anything else goes through the json module, which raises for what JSON cannot hold."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    t = type(v)
    if t is str:
        return '"' + v.translate(_ESCAPES) + '"'
    if t is int:
        return str(v)
    if t is float:
        if v != v or v == _INF or v == -_INF:
            raise ValueError("NaN and infinity are not JSON")
        return repr(v)
    if t is list or t is tuple:
        return "[" + ",".join([dumps(x) for x in v]) + "]"
    if t is dict and all(type(k) is str for k in v):
        return "{" + ",".join([dumps(k) + ":" + dumps(x) for k, x in v.items()]) + "}"
    import json

    return json.dumps(v, allow_nan=False)


def classify(exc):
    import errno

    if isinstance(exc, MemoryError):
        return "memory_limit"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_limit"
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
        return "pids_limit"
    return "exception"


def flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def read_input():
    try:
        with open("/vulcan/input.py", "rb") as f:
            return eval(compile(f.read(), "<input>", "eval"), {"__builtins__": {}})
    except FileNotFoundError:
        import json

        with open("/vulcan/input.json", "rb") as f:
            return json.load(f)


def main():
    entry = sys.argv[1]
    send('{"t":"ready"}')
    value = read_input()
    sys.argv = [entry]
    sys.path.insert(0, os.path.dirname(entry))
    module = type(sys)("__main__")
    module.__file__ = entry
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    try:
        with open(entry, "rb") as f:
            code = compile(f.read(), entry, "exec")
        exec(code, module.__dict__)
        fn = module.__dict__.get("main")
        output = fn(value) if callable(fn) else None
    except SystemExit:
        flush()
        raise
    except BaseException as exc:  # everything the code raises is reported
        import traceback

        # Drop the runner's own frame: the trace starts in the user's code.
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
        flush()
        message = "%s: %s" % (type(exc).__name__, exc)
        send('{"t":"error","code":%s,"message":%s}' % (dumps(classify(exc)), dumps(message[:4000])))
        os._exit(1)
    flush()
    try:
        text = dumps(output)
        send('{"t":"result","output":' + text + "}")
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        send('{"t":"error","code":"output_invalid","message":%s}' % dumps("main() returned a value that is not JSON: %s" % exc))
        os._exit(1)
    # The workload is over once main() returned: skip interpreter teardown (a few ms of every
    # run). Threads the code left running end with the sandbox, as they would at a timeout.
    os._exit(0)


main()
