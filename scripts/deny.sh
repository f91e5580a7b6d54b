#!/usr/bin/env bash
# Checks dependencies against deny.toml: licences, bans and sources always;
# RustSec advisories (vulnerable, unmaintained, yanked) whenever the advisory
# database can be had. It lives on GitHub: when GitHub is unreachable a
# local copy from an earlier fetch is used as it is, and with no copy at
# all the advisory check is skipped with a warning (MOAT_REQUIRE_ADVISORIES=1
# makes that an error).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "deny: cargo-deny is not installed; run scripts/setup.sh" >&2
  exit 1
fi

cargo deny --log-level error check licenses bans sources

advisory_db="https://github.com/RustSec/advisory-db"
local_dbs="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if timeout 20 git ls-remote --exit-code "$advisory_db" HEAD >/dev/null 2>&1; then
  cargo deny --log-level error check advisories
elif compgen -G "$local_dbs/advisory-db-*/crates" >/dev/null; then
  echo "deny: $advisory_db is unreachable; checking advisories against the local copy in $local_dbs" >&2
  cargo deny --log-level error check --disable-fetch advisories
elif [ "${MOAT_REQUIRE_ADVISORIES:-0}" = 1 ]; then
  echo "deny: $advisory_db is unreachable and there is no local copy; advisories cannot be checked" >&2
  exit 1
else
  echo "deny: warning: advisories NOT checked: $advisory_db is unreachable and there is no local copy in $local_dbs" >&2
fi
