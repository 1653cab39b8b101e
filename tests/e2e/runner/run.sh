#!/bin/sh
# Stand-in for actions/runner's run.sh in hangar's e2e base image.
#
# `run.sh --jitconfig CONFIG` prints the config's sha256 (never the config),
# prints what the cache disk holds from an earlier VM generation, then gets
# one job. The job runs the job-started hook, records itself in a file on the
# cache disk, runs the job-completed hook (hooks as named in .env, like the
# real runner), and run.sh exits 0: one job, then the guest powers off.
#
# By default the job comes at once. With `hangar_e2e.jobs=hotplug` on the
# kernel command line it waits for one, like a real JIT runner waiting for
# GitHub: the guest has no network, so "GitHub assigns a job" reaches it as a
# disk hot-plugged by the test whose serial is `e2e-job-<id>` (it appears as
# /dev/disk/by-id/virtio-e2e-job-<id>).
#
# The cache disk's mount point comes from hangar's /etc/hangar/guest.env
# (world-readable, no secrets), standing in for a workflow that knows the
# pool's `cache.mountPath`.
#
# `run.sh` alone needs a prior config.sh and stays up, like a persistent
# runner waiting for jobs; with `hangar_e2e.jobs=hotplug` it takes
# hot-plugged jobs one after another (see below), running the job hooks.
set -eu
cd "$(dirname "$0")"
say() {
  echo "hangar-e2e-runner: $*"
}
# Who runs the job, and whether Docker answers that user (it does only when
# the daemon is up and the user is in the docker group).
whoami_docker() {
  docker_version=$(docker version --format '{{.Server.Version}}' 2>/dev/null) || docker_version=unreachable
  echo "as $(id -un) in groups $(id -Gn | tr ' ' ','); docker server $docker_version"
}
hook() {
  # $1 = variable name in .env; the real runner runs .sh hooks with bash.
  script=$(sed -n "s/^$1=//p" .env 2>/dev/null | tail -n 1)
  if [ -n "$script" ]; then
    say "hook $1 $script"
    bash "$script"
  fi
}
if [ "${1:-}" = "--jitconfig" ]; then
  [ "$#" -ge 2 ] || { echo "run.sh: --jitconfig needs a value" >&2; exit 2; }
  say "run.sh --jitconfig sha256:$(printf '%s' "$2" | sha256sum | cut -d' ' -f1)"
  cache_dir=$(. /etc/hangar/guest.env 2>/dev/null && printf '%s' "${HANGAR_CACHE_DIR:-}") || cache_dir=
  cache_file=${cache_dir:+$cache_dir/hangar-e2e-job.txt}
  instance=$(cat /var/lib/cloud/data/instance-id 2>/dev/null || echo unknown)
  if [ -n "$cache_file" ] && [ -f "$cache_file" ]; then
    say "instance $instance finds on the cache: $(cat "$cache_file")"
  else
    say "instance $instance finds on the cache: nothing"
  fi
  job=e2e-job-immediate
  case " $(cat /proc/cmdline) " in
    *" hangar_e2e.jobs=hotplug "*)
      say "waiting for a job"
      while :; do
        for dev in /dev/disk/by-id/virtio-e2e-job-*; do
          [ -e "$dev" ] && break 2
        done
        sleep 1
      done
      job=${dev#/dev/disk/by-id/virtio-}
      ;;
  esac
  say "got $job"
  hook ACTIONS_RUNNER_HOOK_JOB_STARTED
  say "job ran $(whoami_docker)"
  if [ -n "$cache_file" ]; then
    printf '%s of instance %s\n' "$job" "$instance" > "$cache_file"
    sync
    say "job wrote to the cache: $(cat "$cache_file")"
  fi
  hook ACTIONS_RUNNER_HOOK_JOB_COMPLETED
  say "run.sh exits 0"
  exit 0
fi
if [ ! -f .runner ]; then
  echo "run.sh: not configured, run config.sh first" >&2
  exit 1
fi
say "run.sh listening $(whoami_docker) ($(cat .runner))"
case " $(cat /proc/cmdline) " in
  *" hangar_e2e.jobs=hotplug "*) ;;
  *) exec sleep infinity ;;
esac
# Jobs one after the other, each a hot-plugged disk `e2e-job-<id>`, oldest
# first. A job runs in a worker process of its own (the real runner's
# Runner.Worker), whose hooks see it as their parent; it lasts until the
# test hot-plugs `e2e-done-<id>`. After a job the listener reports it and
# asks GitHub for the next (a few seconds' round trip), unless stopped.
done_jobs=" "
while :; do
  job=
  for dev in /dev/disk/by-id/virtio-e2e-job-*; do
    [ -e "$dev" ] || continue
    id=${dev#/dev/disk/by-id/virtio-e2e-job-}
    case "$done_jobs" in *" $id "*) continue ;; esac
    job=$id
    break
  done
  if [ -z "$job" ]; then
    sleep 1
    continue
  fi
  say "got e2e-job-$job"
  (
    hook ACTIONS_RUNNER_HOOK_JOB_STARTED
    say "job e2e-job-$job running $(whoami_docker)"
    until [ -e "/dev/disk/by-id/virtio-e2e-done-$job" ]; do
      sleep 1
    done
    say "job e2e-job-$job done"
    hook ACTIONS_RUNNER_HOOK_JOB_COMPLETED
    say "worker of e2e-job-$job exits"
  )
  done_jobs="$done_jobs$job "
  sleep 5
done
