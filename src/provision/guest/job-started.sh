#!/bin/bash
# ACTIONS_RUNNER_HOOK_JOB_STARTED: runs as the runner user before each job.
# Marks the job on the console, then keeps the cache disk under its budget:
# when its use is above HANGAR_PRUNE_ABOVE percent, prune Docker's build
# cache, then delete the oldest entries of the local caches, then unused
# images, until use is at or below the budget. Never fails the job.
set -u
. /etc/hangar/guest.env
sudo -n /usr/local/lib/hangar/job-marker started || echo "hangar-hook: could not mark the job on the console"
[ -n "$HANGAR_CACHE_DIR" ] || exit 0

use() { df --output=pcent "$HANGAR_CACHE_DIR" | tail -n 1 | tr -dc '0-9'; }
over() { [ "$(use)" -gt "$HANGAR_PRUNE_ABOVE" ]; }

over || exit 0
echo "hangar-prune: cache $HANGAR_CACHE_DIR at $(use)% (budget $HANGAR_PRUNE_ABOVE%), pruning"
docker builder prune --force --filter until=24h >/dev/null 2>&1 || true
over && docker builder prune --force >/dev/null 2>&1 || true

# Oldest first. A file inside a BuildKit local cache (a directory with
# index.json and blobs/, what `cache-to: type=local` writes) takes its whole
# cache with it: a half-deleted OCI layout is a broken cache.
if over; then
  while IFS= read -r -d '' entry; do
    file=${entry#* }
    [ -e "$file" ] || continue
    unit=$file
    dir=$(dirname "$file")
    while [ "$dir" != "$HANGAR_CACHE_DIR" ] && [ "$dir" != "/" ]; do
      if [ -f "$dir/index.json" ] && [ -d "$dir/blobs" ]; then
        unit=$dir
      fi
      dir=$(dirname "$dir")
    done
    rm -rf -- "$unit"
    over || break
  done < <(find "$HANGAR_CACHE_DIR" -xdev \
    \( -path "$HANGAR_CACHE_DIR/docker" -o -path "$HANGAR_CACHE_DIR/lost+found" \) -prune \
    -o -type f -printf '%T@ %p\0' | sort -z -n)
  find "$HANGAR_CACHE_DIR" -xdev -mindepth 1 -depth -type d -empty \
    -not -path "$HANGAR_CACHE_DIR/docker*" -not -path "$HANGAR_CACHE_DIR/lost+found" \
    -delete 2>/dev/null || true
fi
over && docker system prune --all --force >/dev/null 2>&1 || true
echo "hangar-prune: cache $HANGAR_CACHE_DIR now at $(use)%"
exit 0
