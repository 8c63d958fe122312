#!/usr/bin/env bash
# The project's test command (named in the README, run by CI).
# As root the privileged integration tests run too; elsewhere they skip and
# say why.
set -euo pipefail
cd "$(dirname "$0")/.."
# One package at a time (-p 1): the integration suite's overrun tests
# measure a watcher against storms, and other packages' storms beside them
# (the root package's 5,000-child usage storm, the workload tests) made
# them miss their 60 s bound in CI.
# -timeout 30m: the integration package takes about 5 minutes on a quiet
# 2-core machine and twice that with both cores busy (scripts/hog.sh),
# against go test's default of 10 minutes a package, which is no test.
go test -race -count=1 -p 1 -timeout 30m ./... "$@"
