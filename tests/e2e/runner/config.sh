#!/bin/sh
# Stand-in for actions/runner's config.sh in hangar's e2e base image.
# Prints the arguments it was given to its stdout (which hangar's guest sends
# to the serial console); a --token value only as its sha256, never the value.
# Records the registration in .runner, as the real one does, for run.sh.
set -eu
cd "$(dirname "$0")"
if [ "$(id -u)" -eq 0 ]; then
  echo "Must not run with sudo" >&2
  exit 1
fi
line="config.sh"
while [ "$#" -gt 0 ]; do
  case "$1" in
    --token)
      [ "$#" -ge 2 ] || { echo "config.sh: --token needs a value" >&2; exit 2; }
      line="$line --token sha256:$(printf '%s' "$2" | sha256sum | cut -d' ' -f1)"
      shift 2
      ;;
    *)
      line="$line $1"
      shift
      ;;
  esac
done
echo "hangar-e2e-runner: $line"
printf '%s\n' "$line" > .runner
