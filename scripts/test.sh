#!/usr/bin/env bash
# test.sh: what `make test` runs once bin/recalc is built.
#
# DATABASE_URL comes from scripts/db.sh url (so it is used when set; otherwise the throwaway
# cluster starts). Then: go vet, go test -race (its TestConformance runs testdata's conformance
# cases); side by side, tiny benchmark smoke runs and the conformance cases through a shell
# runner (the one CONFORMANCE_RUNNER names when set, called as `RUNNER BINARY` with the PG*
# variables derived from a URL-form DATABASE_URL, else scripts/conformance.sh on three of them,
# every one with CONFORMANCE_CASES=all); then the fuzz targets of internal/model for 20 s.
# Every phase runs even when an earlier one failed; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
export PATH="$PATH:/usr/local/go/bin"

DATABASE_URL=$(bash scripts/db.sh url) || { echo "test: no database (scripts/db.sh url failed)" >&2; exit 1; }
export DATABASE_URL
echo "==> database: $(sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$DATABASE_URL")"

failed=()
phase() {
  local name=$1 start=$SECONDS
  shift
  echo "==> $name"
  if "$@"; then
    echo "==> $name: ok ($((SECONDS - start))s)"
  else
    echo "==> $name: FAILED ($((SECONDS - start))s)"
    failed+=("$name")
  fi
}

external_conformance() {
  local env
  if ! env=$(bash scripts/db.sh pgenv "$DATABASE_URL" 2>/dev/null); then
    echo "note: DATABASE_URL is a keyword string; $CONFORMANCE_RUNNER needs PGHOST/PGPORT/PGUSER, skipped"
    return 0
  fi
  (
    unset PGHOST PGPORT PGUSER PGPASSWORD PGSSLMODE PGDATABASE
    eval "$env"
    bash "$CONFORMANCE_RUNNER" "$PWD/bin/recalc"
  )
}

phase "go vet ./..." go vet ./...
# -timeout: go test's default of 10 minutes per package is a false failure on a machine half as
# fast as usual (internal/attach takes about 6 minutes alone on a slow day, and twice that beside
# another package); a real hang still fails, and every process test has its own deadline.
# -vet=off: the phase above ran go vet's full set of checks, of which go test's own vet is a
# subset, on the same packages and test files; go test would redo it for each package whose
# code changed since its last vet (four packages' vet cost 13-16 s of CPU before their tests).
# GORACE atexit_sleep_ms=0: the race runtime otherwise sleeps a second before every race-built
# binary exits (ThreadSanitizer's default), a second a package; a race still fails its test at
# once, and the binary's exit status still says so. A GORACE of your own is kept and wins.
phase "go test -race -count=1 -vet=off -timeout 25m ./..." \
  env GORACE="atexit_sleep_ms=0 ${GORACE:-}" go test -race -count=1 -vet=off -timeout 25m ./...
# The parser's fuzz targets, briefly and side by side (go test -fuzz takes one target at a time).
fuzz() {
  local target dir pids=() status=0
  dir=$(mktemp -d)
  # One short run builds the instrumented test binary, so the two below share it from the cache.
  go test -run '^$' -fuzz '^FuzzDecode$' -fuzztime 1x ./internal/model >"$dir/build" 2>&1 || { cat "$dir/build"; return 1; }
  for target in FuzzDecode FuzzLogic; do
    go test -run '^$' -fuzz "^$target\$" -fuzztime 20s ./internal/model >"$dir/$target" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  for target in FuzzDecode FuzzLogic; do echo "--- $target"; tail -n 3 "$dir/$target"; done
  rm -rf "$dir"
  return $status
}
# The benchmarks once at a tiny size, so they never rot: the Go benchmarks, and make bench's
# driver (its results go to a scratch file, not bench/results.json).
bench_smoke() {
  env BENCH_SIZE=2000 go test -run '^$' -bench . -benchtime 1x ./bench/... &&
    go run ./bench/cmd/bench -sizes 2000 -samples 200 -fresh-for 3s -copy-rows 2000 -db recalc_bench_smoke \
      -recalc bin/recalc -out "$(mktemp -t recalc-bench-XXXXXX.json)"
}
# go test's TestConformance drives every case through the built binary. A shell runner checks
# the same binary end to end once more: the external one CONFORMANCE_RUNNER names, on its own
# cases; else scripts/conformance.sh, on three cases that meet each of its paths (a one-step
# case, a refused step and CSV quoting, deletions across steps), or on every case when
# CONFORMANCE_CASES=all (all of them again took 185 s of the CI's 1,895 s, checking nothing
# that TestConformance had not).
conformance() {
  local dir name
  if [ -n "${CONFORMANCE_RUNNER:-}" ]; then
    echo "($CONFORMANCE_RUNNER)"
    external_conformance
    return
  fi
  if [ "${CONFORMANCE_CASES:-}" = all ]; then
    echo "(testdata/conformance/cases, every case)"
    bash scripts/conformance.sh bin/recalc testdata/conformance/cases
    return
  fi
  dir=$(mktemp -d)
  for name in basics csv_quoting_h209 deletions_h117; do
    ln -s "$PWD/testdata/conformance/cases/$name" "$dir/$name" || return 1
  done
  echo "(testdata/conformance/cases: basics, csv_quoting_h209, deletions_h117; CONFORMANCE_CASES=all runs every case)"
  bash scripts/conformance.sh bin/recalc "$dir"
  local rc=$?
  rm -rf "$dir"
  return $rc
}
# These share no database, none fails on a measured figure, and neither keeps both cores busy:
# side by side they take about 40% less time than one after the other. Each one's output is
# printed whole, in order, once both have ended. The fuzzers run after them, alone: they use
# both cores for as long as they are given, which would only slow the others down.
side_by_side() {
  local dir name rc secs
  dir=$(mktemp -d)
  echo "==> side by side: $*"
  for name in "$@"; do
    ( start=$SECONDS; "$name" >"$dir/$name" 2>&1; echo "$? $((SECONDS - start))" >"$dir/$name.rc" ) &
  done
  wait
  for name in "$@"; do
    echo "==> $name"
    cat "$dir/$name"
    read -r rc secs <"$dir/$name.rc" || rc=killed
    if [ "$rc" = 0 ]; then
      echo "==> $name: ok (${secs}s)"
    else
      echo "==> $name: FAILED (exit status $rc, ${secs:-?}s)"
      failed+=("$name")
    fi
  done
  rm -rf "$dir"
}
side_by_side bench_smoke conformance
phase "fuzz FuzzDecode and FuzzLogic (20s each, side by side)" fuzz

if [ ${#failed[@]} -gt 0 ]; then
  printf 'test: failed: %s\n' "${failed[*]}" >&2
  exit 1
fi
