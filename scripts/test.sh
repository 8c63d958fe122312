#!/usr/bin/env bash
# The project's test command (named in the README, run by CI).
# As root the privileged integration tests run too; elsewhere they skip and
# say why.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -race -count=1 ./... "$@"
