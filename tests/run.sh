#!/usr/bin/env bash
# The test suite, as the README gives it: installs what the tests need (as
# root), starts a real libvirtd and a second one reached over ssh, then runs
# every test. Tests that need the daemons are required here
# (HANGAR_REQUIRE_LIBVIRTD=1), skipped elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/install-deps
.ci/start-libvirtd
# A second host, remote over ssh (tests/remote_system.rs, tests/e2e_remote.rs).
.ci/start-remote-libvirtd
# GitHub's OpenAPI description, cached: tests/contract.rs holds the
# simulator to it.
.ci/fetch-openapi >/dev/null

export HANGAR_REQUIRE_LIBVIRTD=1
export HANGAR_REQUIRE_OPENAPI=1
export PROPTEST_CASES="${PROPTEST_CASES:-256}"
cargo test --all-targets -- --test-threads=4
cargo test --features failpoints --test reliability -- --test-threads=2
# Calls that hang and signals during them (fault points in the provider).
cargo test --features failpoints --test deadline
