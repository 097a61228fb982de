# Vulcan's sh runner, run inside the sandbox as: sh run-sh.sh ENTRY
# Reports readiness on fd 3, closes it so the script cannot write to it, and runs ENTRY
# with the input JSON on stdin (the caller feeds it).
printf '{"t":"ready"}\n' >&3
exec 3>&-
exec /bin/sh "$1"
