#!/bin/bash
# hangar's guest provisioning, run once per instance by cloud-init (runcmd).
# Reads /etc/hangar/guest.env (written by the same user-data) and, stage by
# stage, prints a marker on the serial console: "hangar: user ok",
# "hangar: cache mounted <bytes>", "hangar: docker ok", then starts
# hangar-runner.service, which prints "hangar: runner started <name> <labels>".
# The first failing stage prints "hangar: failed <stage>" and stops.
set -euo pipefail
say=/usr/local/lib/hangar/say
stage=setup
trap '"$say" "failed $stage"' ERR
. /etc/hangar/guest.env
export DEBIAN_FRONTEND=noninteractive

apt_install() {
  apt-get install -y -q --no-install-recommends "$@"
}

# The guest agent is hangar's channel into the guest (drain requests,
# file-system use). Not a stage: without it hangar waits for a busy runner
# as it would without drains, and shows no use from inside.
if ! command -v qemu-ga >/dev/null; then
  { apt_install qemu-guest-agent || { apt-get update -q && apt_install qemu-guest-agent; }; } >/dev/null 2>&1 \
    || echo "hangar-provision: could not install qemu-guest-agent"
fi
systemctl start qemu-guest-agent.service >/dev/null 2>&1 || echo "hangar-provision: qemu-guest-agent is not running"

# sshd for the pool's sshAuthorizedKeys (cloud-init wrote the keys), where
# the image does not carry it. Not a stage either: the runner works without.
if [ "${HANGAR_SSH:-0}" = 1 ]; then
  if ! [ -x /usr/sbin/sshd ]; then
    { apt_install openssh-server || { apt-get update -q && apt_install openssh-server; }; } >/dev/null 2>&1 \
      || echo "hangar-provision: could not install openssh-server"
  fi
  systemctl enable --now ssh.service >/dev/null 2>&1 || echo "hangar-provision: sshd is not running"
fi

stage=user
id -u "$HANGAR_USER" >/dev/null
home=$(getent passwd "$HANGAR_USER" | cut -d: -f6)
[ -d "$home" ]
"$say" "user ok"

if [ -n "$HANGAR_CACHE_DIR" ]; then
  stage=cache
  dev=$(readlink -f "$HANGAR_CACHE_DEVICE")
  [ -b "$dev" ]
  mountpoint -q "$HANGAR_CACHE_DIR" || mount "$HANGAR_CACHE_DIR"
  [ "$(findmnt -n -o SOURCE --target "$HANGAR_CACHE_DIR")" = "$dev" ]
  # A cache volume that was grown since it was formatted: grow its filesystem.
  resize2fs "$dev" >/dev/null 2>&1 || echo "hangar-provision: could not grow the cache filesystem"
  chown "$HANGAR_USER:" "$HANGAR_CACHE_DIR"
  systemctl enable --now hangar-prune.timer >/dev/null 2>&1 || echo "hangar-provision: no prune timer"
  "$say" "cache mounted $(blockdev --getsize64 "$dev")"
fi

stage=docker
case "$HANGAR_DOCKER" in
  distro)
    # docker.io comes from cloud-init's packages; buildx where the distro has it.
    command -v docker >/dev/null || apt_install docker.io
    if ! docker buildx version >/dev/null 2>&1; then
      apt_install docker-buildx || echo "hangar-provision: no docker-buildx package in this distro"
    fi
    ;;
  docker-ce)
    if ! dpkg-query -W -f='${Status}' docker-ce 2>/dev/null | grep -q "install ok installed"; then
      . /etc/os-release
      install -m 0755 -d /etc/apt/keyrings
      curl -fsSL --retry 3 "https://download.docker.com/linux/$ID/gpg" -o /etc/apt/keyrings/docker.asc
      chmod a+r /etc/apt/keyrings/docker.asc
      echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/$ID $VERSION_CODENAME stable" \
        > /etc/apt/sources.list.d/docker.list
      apt-get update -q
      apt_install docker-ce docker-ce-cli containerd.io docker-buildx-plugin
    fi
    ;;
  preinstalled)
    command -v docker >/dev/null
    ;;
esac
getent group docker >/dev/null || groupadd --system docker
usermod -aG docker "$HANGAR_USER"
case " $(id -nG "$HANGAR_USER") " in
  *" docker "*) ;;
  *) false ;;
esac
systemctl enable docker.service >/dev/null 2>&1
if [ "$HANGAR_DOCKER_DATA_ROOT" = 1 ]; then
  # daemon.json points at the cache; a daemon that started before the cache
  # was mounted must start again to use it.
  mkdir -p "$HANGAR_CACHE_DIR/docker"
  systemctl restart docker.service
else
  systemctl start docker.service
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && break
  sleep 1
done
docker info >/dev/null
if [ "$HANGAR_DOCKER_DATA_ROOT" = 1 ]; then
  [ "$(docker info --format '{{.DockerRootDir}}')" = "$HANGAR_CACHE_DIR/docker" ]
fi
"$say" "docker ok"

if [ -n "$HANGAR_EMULATE" ]; then
  stage=emulate
  # qemu-user-static and binfmt-support come from cloud-init's packages.
  update-binfmts --enable >/dev/null 2>&1 || true
  for arch in $HANGAR_EMULATE; do
    case "$arch" in
      arm64) handler=qemu-aarch64 ;;
      amd64) handler=qemu-x86_64 ;;
      386) handler=qemu-i386 ;;
      *) handler=qemu-$arch ;;
    esac
    # The F (fix-binary) flag makes the handler work inside containers too.
    grep -q '^flags: .*F' "/proc/sys/fs/binfmt_misc/$handler"
  done
fi

stage=runner
case "$HANGAR_RUNNER_INSTALL" in
  download)
    case "$(uname -m)" in
      x86_64) arch=x64 ;;
      aarch64) arch=arm64 ;;
      armv7l) arch=arm ;;
      *) arch=$(uname -m) ;;
    esac
    tarball=$(mktemp)
    curl -fsSL --retry 3 -o "$tarball" \
      "https://github.com/actions/runner/releases/download/v$HANGAR_RUNNER_VERSION/actions-runner-linux-$arch-$HANGAR_RUNNER_VERSION.tar.gz"
    echo "$HANGAR_RUNNER_SHA256  $tarball" | sha256sum --check --quiet
    mkdir -p "$HANGAR_RUNNER_DIR"
    tar -xzf "$tarball" -C "$HANGAR_RUNNER_DIR"
    rm -f "$tarball"
    "$HANGAR_RUNNER_DIR/bin/installdependencies.sh"
    ;;
  volume)
    # The tarball hangar verified, on the read-only runner disk: its first
    # HANGAR_RUNNER_SIZE bytes, checked again before anything is unpacked.
    for _ in $(seq 1 30); do
      [ -e "$HANGAR_RUNNER_DEVICE" ] && break
      sleep 1
    done
    tarball=$(mktemp)
    head -c "$HANGAR_RUNNER_SIZE" "$HANGAR_RUNNER_DEVICE" > "$tarball"
    echo "$HANGAR_RUNNER_SHA256  $tarball" | sha256sum --check --quiet
    mkdir -p "$HANGAR_RUNNER_DIR"
    tar -xzf "$tarball" -C "$HANGAR_RUNNER_DIR"
    rm -f "$tarball"
    if [ -x "$HANGAR_RUNNER_DIR/bin/installdependencies.sh" ]; then
      "$HANGAR_RUNNER_DIR/bin/installdependencies.sh"
    fi
    ;;
  preinstalled)
    ;;
esac
[ -x "$HANGAR_RUNNER_DIR/run.sh" ]
chown -R "$HANGAR_USER:" "$HANGAR_RUNNER_DIR"
# The runner reads its job hooks from .env in its own directory.
env_file=$HANGAR_RUNNER_DIR/.env
touch "$env_file"
sed -i '/^ACTIONS_RUNNER_HOOK_JOB_\(STARTED\|COMPLETED\)=/d' "$env_file"
printf '%s\n' \
  "ACTIONS_RUNNER_HOOK_JOB_STARTED=/usr/local/lib/hangar/job-started.sh" \
  "ACTIONS_RUNNER_HOOK_JOB_COMPLETED=/usr/local/lib/hangar/job-completed.sh" >> "$env_file"
chown "$HANGAR_USER:" "$env_file"

stage=credential
# The credential is a file of its own on the read-only seed disk, which
# cloud-init never reads: copied to a root-only tmpfs, it never touches the
# root disk (hangar detaches and deletes the seed once the runner is up).
install -d -m 0700 /run/hangar
seed_mnt=$(mktemp -d /run/hangar/seed.XXXXXX)
mount -o ro "$HANGAR_SEED_DEVICE" "$seed_mnt"
credential=/run/hangar/credential
install -m 0600 -o root -g root "$seed_mnt/$HANGAR_SEED_CREDENTIAL" "$credential"
umount "$seed_mnt"
rmdir "$seed_mnt"
[ -s "$credential" ]
case "$HANGAR_CREDENTIAL" in
  jit)
    "$say" "jitconfig sha256 $(tr -d '\n' < "$credential" | sha256sum | cut -d' ' -f1)"
    ;;
  registration)
    ephemeral=()
    if [ "$HANGAR_EPHEMERAL" = 1 ]; then
      ephemeral=(--ephemeral)
    fi
    token=$(cat "$credential")
    (cd "$HANGAR_RUNNER_DIR" && runuser -u "$HANGAR_USER" -- env HOME="$home" ./config.sh \
      --unattended --url "$HANGAR_RUNNER_URL" --token "$token" --name "$HANGAR_NAME" \
      --labels "$HANGAR_LABELS" --runnergroup "$HANGAR_RUNNER_GROUP" --work "$HANGAR_WORK" \
      --replace --disableupdate "${ephemeral[@]}")
    unset token
    rm -f "$credential"
    ;;
esac
systemctl daemon-reload
if [ "$HANGAR_EPHEMERAL" != 1 ]; then
  systemctl enable hangar-runner.service >/dev/null 2>&1
fi
# The unit is ordered after cloud-final, so it starts once cloud-init is done.
systemctl start --no-block hangar-runner.service
