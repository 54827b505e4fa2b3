#!/usr/bin/env bash
# demo.sh: what `make demo` runs once bin/recalc is built.
#
# Generates a realistic org (DEMO_RECORDS records, default 50000, seed 1) into .demo/org.json,
# loads it into a fresh database recalc_demo (dropped and recreated, so the demo repeats) on the
# server of scripts/db.sh url, recalculates everything, prints the summary (recalc stats) and
# one access query: user u0001 on account acc000001, two ids the generator always produces
# (u0001 is an active internal user with a role and owns acc000001).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/go/bin"
records=${DEMO_RECORDS:-50000}

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

admin=$(bash scripts/db.sh url)
DATABASE_URL=$admin bash scripts/db.sh dropdb recalc_demo
DATABASE_URL=$(DATABASE_URL=$admin bash scripts/db.sh createdb recalc_demo)
export DATABASE_URL
echo "==> database: $(sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$DATABASE_URL")"

mkdir -p .demo
gen() { go run ./bench/cmd/gen -records "$records" -seed 1 >.demo/org.json; }
label="go run ./bench/cmd/gen -records $records -seed 1 > .demo/org.json" step gen
step bin/recalc init
step bin/recalc import .demo/org.json
step bin/recalc run --full
step bin/recalc stats
step bin/recalc access --user u0001 --record acc000001
