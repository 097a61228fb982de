# Unpacks the workload's archive into /work inside the sandbox, then runs the runner.
# The server checked the archive already (no absolute or ../ paths, no escaping links).
/usr/bin/tar -xzf /vulcan/code.tar.gz -C /work --no-same-owner || { echo "vulcan: cannot unpack code_archive" >&2; exit 121; }
exec "$@"
