#!/usr/bin/env bash
# conformance.sh: run conformance cases against a recalc binary, needing only DATABASE_URL.
#
#   scripts/conformance.sh RECALC_BIN [CASES_DIR]     (default CASES_DIR: testdata/conformance/cases)
#
# It reaches the server through DATABASE_URL (URL or keyword form): each case gets a fresh database on that
# server, created and dropped with scripts/db.sh (psql), and recalc sees DATABASE_URL naming it.
# When DATABASE_URL is unset, scripts/db.sh url provides one (the throwaway cluster).
#
# Per case: `recalc init`, then for each steps/NN.json in order: `recalc import`, `recalc run`,
# `recalc access --format csv`, compared with steps/NN.csv. A step with steps/NN.error instead
# must fail to import, and the access printed afterwards must equal the previous step's csv
# (only the header when no step came before). Each recalc call is stopped after
# CONFORMANCE_TIMEOUT seconds (default 300).
# Prints one line per failing step (and a few differing rows) and, last, "N passed, N failed";
# exits non-zero when a case failed.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
[ $# -ge 1 ] || { echo "usage: $0 RECALC_BIN [CASES_DIR]" >&2; exit 2; }
bin=$(realpath "$1") || exit 2
[ -x "$bin" ] || { echo "conformance: $1 is not an executable" >&2; exit 2; }
cases=${2:-$here/../testdata/conformance/cases}
[ -d "$cases" ] || { echo "conformance: no cases folder $cases" >&2; exit 2; }
timeout_s=${CONFORMANCE_TIMEOUT:-300}

admin=${DATABASE_URL:-}
if [ -z "$admin" ]; then admin=$(bash "$here/db.sh" url) || exit 2; fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'object,record,user,access\n' >"$tmp/empty.csv"

# recalc runs the binary against the case database, with a time limit when timeout(1) exists.
recalc() {
  if command -v timeout >/dev/null 2>&1; then
    DATABASE_URL=$caseurl timeout "$timeout_s" "$bin" "$@"
  else
    DATABASE_URL=$caseurl "$bin" "$@"
  fi
}
db() { DATABASE_URL=$admin bash "$here/db.sh" "$@"; }

pass=0 fail=0
for case in "$cases"/*/; do
  name=$(basename "$case")
  dbname="conf_${name//[^a-z0-9_]/_}_$$"
  db dropdb "$dbname" >/dev/null 2>&1
  if ! caseurl=$(db createdb "$dbname" 2>"$tmp/err"); then
    echo "$name: createdb failed: $(tail -1 "$tmp/err")"
    fail=$((fail + 1))
    continue
  fi
  ok=1
  if ! recalc init >"$tmp/out" 2>&1; then echo "$name: init failed: $(tail -1 "$tmp/out")"; ok=0; fi
  prev=$tmp/empty.csv
  for step in "$case"steps/*.json; do
    [[ $ok == 1 ]] || break
    [ -f "$step" ] || { echo "$name: no steps/*.json"; ok=0; break; }
    base=${step%.json}
    sn=$(basename "$base")
    if [[ -f $base.error ]]; then
      if recalc import "$step" >"$tmp/out" 2>&1; then
        echo "$name/$sn: invalid model was accepted ($(cat "$base.error"))"; ok=0; break
      fi
      recalc run >"$tmp/out" 2>&1 || { echo "$name/$sn: run failed after a rejected import: $(tail -1 "$tmp/out")"; ok=0; break; }
      want=$prev
    else
      recalc import "$step" >"$tmp/out" 2>&1 || { echo "$name/$sn: import failed: $(tail -1 "$tmp/out")"; ok=0; break; }
      recalc run >"$tmp/out" 2>&1 || { echo "$name/$sn: run failed: $(tail -1 "$tmp/out")"; ok=0; break; }
      want=$base.csv
      prev=$want
    fi
    recalc access --format csv >"$tmp/got" 2>"$tmp/err" || { echo "$name/$sn: access failed: $(tail -1 "$tmp/err")"; ok=0; break; }
    if ! cmp -s "$want" "$tmp/got"; then
      echo "$name/$sn: access differs ($(diff "$want" "$tmp/got" | grep -c '^[<>]') rows; < expected, > got):"
      diff "$want" "$tmp/got" | grep '^[<>]' | head -5
      ok=0
      break
    fi
  done
  db dropdb "$dbname" >/dev/null 2>&1
  if [[ $ok == 1 ]]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
done
echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
