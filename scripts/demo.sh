#!/usr/bin/env bash
# demo.sh: what `make demo` runs once bin/recalc is built.
#
# Generates a realistic org (DEMO_RECORDS records, default 50000, seed 1) into .demo/org.json,
# loads it into a fresh database DEMO_DB (default recalc_demo; dropped and recreated, so the demo
# repeats) on the server of scripts/db.sh url, recalculates everything, prints the summary (recalc stats) and
# one access query: user u0001 on account acc000001, two ids the generator always produces
# (u0001 is an active internal user with a role and owns acc000001). It ends by printing how to
# go on: the DATABASE_URL of DEMO_DB, where the binary is, and commands to try.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/go/bin"
records=${DEMO_RECORDS:-50000}
db=${DEMO_DB:-recalc_demo}
throwaway=${DATABASE_URL:+no} # empty: scripts/db.sh starts (or reuses) its throwaway cluster

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

# step runs a command and prints how long it took; $label, when set, is shown instead of it.
step() {
  local start ms
  start=$(now_ms)
  echo "==> ${label:-$*}"
  "$@"
  ms=$(($(now_ms) - start))
  printf '    (%d.%03ds)\n' $((ms / 1000)) $((ms % 1000))
}

# mask prints connection string $1 with its password, if any, shown as ***.
mask() { sed -E -e 's#(://[^:/@]*):[^@/]*@#\1:***@#' -e 's#(password=)[^ &]*#\1***#g' <<<"$1"; }

# squote prints $1 single-quoted for a POSIX shell.
squote() { local q="'\\''"; printf "'%s'" "${1//\'/$q}"; }

# dquote prints $1 escaped for use inside double quotes.
dquote() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; s=${s//\$/\\\$}; s=${s//\`/\\\`}; printf '%s' "$s"; }

admin=$(bash scripts/db.sh url)
DATABASE_URL=$admin bash scripts/db.sh dropdb "$db"
DATABASE_URL=$(DATABASE_URL=$admin bash scripts/db.sh createdb "$db")
export DATABASE_URL
echo "==> database: $(mask "$DATABASE_URL")"

mkdir -p .demo
gen() { go run ./bench/cmd/gen -records "$records" -seed 1 >.demo/org.json; }
label="go run ./bench/cmd/gen -records $records -seed 1 > .demo/org.json" step gen
step bin/recalc init
step bin/recalc import .demo/org.json
step bin/recalc run --full
step bin/recalc stats
step bin/recalc access --user u0001 --record acc000001

# How to go on. u0001 and con000001 exist in every generated org of 2 records or more.
shown=$(mask "$DATABASE_URL")
cat <<EOF

==> Done. The demo org stays in database $db. To go on with it, in your shell:

    export DATABASE_URL=$(squote "$shown")
    export PATH="$(dquote "$PWD/bin"):\$PATH"    # recalc is bin/recalc, built by make demo
EOF
if [ "$shown" != "$DATABASE_URL" ]; then
  echo "    # the password is shown as ***: put yours in its place"
fi
if [ -z "$throwaway" ]; then
  echo "    # the throwaway cluster keeps running; 'make db-stop' stops it"
fi
cat <<'EOF'

Then try:

    recalc status                                    # deferral, pending changes, recent jobs
    recalc explain --user u0100 --record con000010   # every reason u0100 has access to contact con000010
    recalc plan                                      # what the next `recalc run` would recompute, and why

README.md tells the rest; docs/model.md describes the model file that .demo/org.json is.
EOF
