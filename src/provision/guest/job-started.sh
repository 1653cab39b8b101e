#!/bin/bash
# ACTIONS_RUNNER_HOOK_JOB_STARTED: runs as the runner user before each job.
# Marks the job on the console, then keeps the cache disk within its budget
# (cache-prune; hangar-prune.timer runs it during long jobs too). Never
# fails the job.
sudo -n /usr/local/lib/hangar/job-marker started || echo "hangar-hook: could not mark the job on the console"
/usr/local/lib/hangar/cache-prune || true
exit 0
