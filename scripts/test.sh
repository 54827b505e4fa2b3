#!/usr/bin/env bash
# test.sh: what `make test` runs once bin/recalc is built.
#
# DATABASE_URL comes from scripts/db.sh url (so it is used when set; otherwise the throwaway
# cluster starts). Then: go vet, go test -race, each fuzz target of internal/model for 20 s, tiny
# benchmark smoke runs, the conformance cases in testdata/ through scripts/conformance.sh, and,
# when ../shared/conformance/run exists, that runner too (it wants the PG* variables, derived
# from a URL-form DATABASE_URL).
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

shared_conformance() {
  local env
  if ! env=$(bash scripts/db.sh pgenv "$DATABASE_URL" 2>/dev/null); then
    echo "note: DATABASE_URL is a keyword string; ../shared/conformance/run needs PGHOST/PGPORT/PGUSER, skipped"
    return 0
  fi
  (
    unset PGHOST PGPORT PGUSER PGPASSWORD PGSSLMODE PGDATABASE
    eval "$env"
    bash ../shared/conformance/run "$PWD/bin/recalc"
  )
}

phase "go vet ./..." go vet ./...
phase "go test -race -count=1 ./..." go test -race -count=1 ./...
# The parser's fuzz targets, briefly; go test -fuzz takes one target at a time.
for target in FuzzDecode FuzzLogic; do
  phase "fuzz $target (20s)" go test -run '^$' -fuzz "^$target\$" -fuzztime 20s ./internal/model
done
# The benchmarks once at a tiny size, so they never rot: the Go benchmarks, and make bench's
# driver (its results go to a scratch file, not bench/results.json).
phase "Go benchmarks (smoke, BENCH_SIZE=2000)" env BENCH_SIZE=2000 go test -run '^$' -bench . -benchtime 1x ./bench/...
phase "make bench driver (smoke, 2000 records)" go run ./bench/cmd/bench -sizes 2000 -samples 200 -db recalc_bench_smoke \
  -recalc bin/recalc -out "$(mktemp -t recalc-bench-XXXXXX.json)"
if [ -d testdata/conformance/cases ]; then
  phase "conformance (testdata/conformance/cases)" bash scripts/conformance.sh bin/recalc testdata/conformance/cases
else
  echo "note: no testdata/conformance/cases in this tree; scripts/conformance.sh skipped"
fi
if [ -f ../shared/conformance/run ]; then
  phase "conformance (../shared/conformance/run)" shared_conformance
fi

if [ ${#failed[@]} -gt 0 ]; then
  printf 'test: failed: %s\n' "${failed[*]}" >&2
  exit 1
fi
