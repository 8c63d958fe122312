#!/usr/bin/env bash
# The project's test command (named in the README, run by CI).
# As root the privileged integration tests run too; elsewhere they skip and
# say why.
set -euo pipefail
cd "$(dirname "$0")/.."
# Packages run in parallel (go test's default, one per CPU): each test
# must hold while other packages' storms run beside it, as on a busy CI
# host. The overrun tests wait for their own storm's end on a barrier
# (workload.Spec.NotifyReaped) and account for drops by the kernel's
# counters, so other packages' events do not change what they assert.
# -timeout 30m: the integration package takes minutes, and more than
# twice that with both cores busy (scripts/hog.sh), against go test's
# default of 10 minutes a package, which is no test.
go test -race -count=1 -timeout 30m ./... "$@"
