#!/usr/bin/env bash
# Supply-chain check: `cargo deny check` (advisories, licences, bans, sources) against
# deny.toml, offline.
#   bash scripts/deny.sh
# The RustSec advisory database comes from the snapshot tarball in
# ../shared/supply-chain/ (next to the repository; SGW_ADVISORY_DB_TARBALL overrides),
# unpacked into $CARGO_HOME/advisory-dbs where deny.toml looks. Without it, and without
# an earlier copy there, licences, bans and sources are still checked and advisories are
# skipped with a loud warning: a missing snapshot does not fail CI, a finding does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DENY_VERSION=0.20.2 # needs rustc >= 1.88
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi

# cargo-deny runs offline (its database's git host is out of reach), so the crates it
# reads must already be here: fetch them from crates.io first (a no-op when they are).
cargo fetch --locked --quiet

export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
dbs="$CARGO_HOME/advisory-dbs"
# The folder cargo-deny derives from the default database URL (see the snapshot's README).
db="$dbs/advisory-db-3157b0e258782691"
tarball="${SGW_ADVISORY_DB_TARBALL:-}"
if [[ -n $tarball && ! -f $tarball ]]; then
  echo "SGW_ADVISORY_DB_TARBALL=$tarball: no such file" >&2
elif [[ -z $tarball ]]; then
  tarball=$(find ../shared/supply-chain -maxdepth 1 -name 'rustsec-advisory-db-*.tar.gz' 2>/dev/null | sort | tail -n 1 || true)
fi

if [[ -n $tarball && -f $tarball ]]; then
  # Unpack once per snapshot: the stamp names the tarball the copy came from.
  stamp="$dbs/.speech-gateway-snapshot"
  if [[ ! -d $db || "$(cat "$stamp" 2>/dev/null)" != "$(basename "$tarball")" ]]; then
    mkdir -p "$dbs"
    rm -rf "$db"
    tar xzf "$tarball" -C "$dbs"
    basename "$tarball" >"$stamp"
  fi
  echo "advisory database: $(basename "$tarball")" >&2
elif [[ -d $db ]]; then
  echo "advisory database: the copy already in $dbs (no snapshot tarball found)" >&2
else
  db=""
fi

if [[ -n $db ]]; then
  exec cargo deny --offline --locked check --hide-inclusion-graph advisories licenses bans sources
fi

cat >&2 <<'WARN'

!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  WARNING: ADVISORIES WERE NOT CHECKED.                                         !!
!!  No RustSec snapshot at ../shared/supply-chain/rustsec-advisory-db-*.tar.gz     !!
!!  (or $SGW_ADVISORY_DB_TARBALL), and none unpacked in $CARGO_HOME/advisory-dbs. !!
!!  Known vulnerabilities in dependencies would go unnoticed. Checking licences,   !!
!!  bans and sources only.                                                        !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!

WARN
exec cargo deny --offline --locked check --hide-inclusion-graph licenses bans sources
