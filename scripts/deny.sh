#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy in deny.toml): licences,
# banned and duplicate crates, sources (crates.io only), and RustSec
# advisories when a copy of the advisory database is present. The database
# lives on GitHub, which this project's machines and CI cannot reach, so it
# is never fetched here: point TETHER_ADVISORY_DB at a directory holding a
# clone of rustsec/advisory-db as `advisory-db-3157b0e258782691` (the name
# cargo-deny gives the default URL's clone), e.g.
#   git clone https://github.com/rustsec/advisory-db \
#     "$DIR/advisory-db-3157b0e258782691"
#   TETHER_ADVISORY_DB=$DIR bash scripts/deny.sh
# Without it, advisories are skipped and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  echo "deny: installing cargo-deny $CARGO_DENY_VERSION (a few minutes on 2 cores)"
  cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
fi

status=0
pass=0
fail=0
if cargo deny --locked check --hide-inclusion-graph licenses bans sources; then pass=$((pass + 1)); else status=1; fail=$((fail + 1)); fi

db=${TETHER_ADVISORY_DB:-}
if [ -n "$db" ] && [ -d "$db/advisory-db-3157b0e258782691/crates" ]; then
  export TETHER_ADVISORY_DB=$db
  # The crates must be in the local cache: --offline fetches nothing.
  cargo fetch --locked --quiet
  echo "deny: advisories from $db ($(git -C "$db/advisory-db-3157b0e258782691" log -1 --format=%cs 2>/dev/null || echo 'date unknown'))"
  if cargo deny --offline check --hide-inclusion-graph advisories; then pass=$((pass + 1)); else status=1; fail=$((fail + 1)); fi
else
  echo "deny: ADVISORIES SKIPPED: no advisory database (set TETHER_ADVISORY_DB to a directory holding advisory-db-3157b0e258782691, see scripts/deny.sh)"
fi
# Counted in scripts/test-all.sh's total.
echo "# pass $pass"
echo "# fail $fail"
exit "$status"
