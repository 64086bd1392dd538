# shellcheck shell=bash
# Helpers shared by the scripts under scripts/. Sourced, never run: after `cd` to the repository
# root, a script does
#     # shellcheck source=scripts/lib.sh
#     source scripts/lib.sh
# (a script that keeps the caller's directory sources "$(dirname "${BASH_SOURCE[0]}")/lib.sh")
# and gets:
#   TOOLS_BIN              the git-ignored folder of the tools scripts/install-helm.sh installs
#                          (helm, helm3, kubectl): .tools/bin of the repository, as an absolute path
#   use_tools              put $TOOLS_BIN first on PATH (exported), so helm, helm3 and kubectl are
#                          the project's pinned versions
#   log MESSAGE...         MESSAGE on stderr, prefixed with "$LOG_NAME: " (the script's name
#                          without .sh; a script may set LOG_NAME after sourcing to change it)
#   die MESSAGE...         log MESSAGE, then exit 1
#   free_port              print a TCP port free on 127.0.0.1 right now
#   wait_for_url URL SECONDS [ALIVE_COMMAND...]
#                          poll URL once a second (curl, 2 s per try) until it answers 2xx: returns
#                          0 then, 1 when SECONDS passed first, and 2 as soon as ALIVE_COMMAND (run
#                          before each retry, when given) fails, for example because the server
#                          being waited for has exited
# lib.sh sets no shell options and changes no directory: each script keeps its own `set -euo pipefail`.
# scripts/version.sh and scripts/crd-schemas.sh do not use it: tests run copies of them alone.

TOOLS_BIN=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools/bin
LOG_NAME=$(basename "$0" .sh)

use_tools() {
  export PATH="$TOOLS_BIN:$PATH"
}

log() { echo "$LOG_NAME: $*" >&2; }

die() {
  log "$*"
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_url() {
  local url=$1 deadline=$((SECONDS + $2))
  shift 2
  until curl --silent --fail --max-time 2 --output /dev/null "$url"; do
    if [ $# -gt 0 ] && ! "$@"; then
      return 2
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      return 1
    fi
    sleep 1
  done
}
