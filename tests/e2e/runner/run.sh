#!/bin/sh
# Stand-in for actions/runner's run.sh in hangar's e2e base image.
# `run.sh --jitconfig CONFIG` prints the config's sha256 (never the config),
# "runs one job" (the job-started hook, the job, the job-completed hook, as
# named in .env like the real runner) and exits 0. `run.sh` alone needs a
# prior config.sh and stays up, like a persistent runner waiting for jobs.
set -eu
cd "$(dirname "$0")"
hook() {
  # $1 = variable name in .env; the real runner runs .sh hooks with bash.
  script=$(sed -n "s/^$1=//p" .env 2>/dev/null | tail -n 1)
  if [ -n "$script" ]; then
    echo "hangar-e2e-runner: hook $1 $script"
    bash "$script"
  fi
}
if [ "${1:-}" = "--jitconfig" ]; then
  [ "$#" -ge 2 ] || { echo "run.sh: --jitconfig needs a value" >&2; exit 2; }
  echo "hangar-e2e-runner: run.sh --jitconfig sha256:$(printf '%s' "$2" | sha256sum | cut -d' ' -f1)"
  hook ACTIONS_RUNNER_HOOK_JOB_STARTED
  echo "hangar-e2e-runner: job ran as $(id -un) in groups $(id -Gn | tr ' ' ',')"
  hook ACTIONS_RUNNER_HOOK_JOB_COMPLETED
  echo "hangar-e2e-runner: run.sh exits 0"
  exit 0
fi
if [ ! -f .runner ]; then
  echo "run.sh: not configured, run config.sh first" >&2
  exit 1
fi
echo "hangar-e2e-runner: run.sh listening ($(cat .runner))"
exec sleep infinity
