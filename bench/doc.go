// Package bench measures recalc, and holds what the measuring needs: the
// realistic org generator (bench/gen), the pure-SQL materialized-view peer
// (bench/peer), and the driver that `make bench` runs (Run, through
// bench/cmd/bench).
//
// For each org size the driver generates an org, imports it with the recalc
// binary, and takes, in one run so that every ratio compares figures taken
// side by side on the same machine:
//   - full recalculations building new tables and swapping them in: the
//     first one and a nightly one over existing tables (`recalc run --full
//     --in-place=false`, which also counts drift);
//   - access checks and visible-record lists, p50 and p99, on the nightly
//     run's tables after VACUUM and CHECKPOINT;
//   - a full recalculation in place (`recalc run --full`) over emptied
//     share tables, so that it writes every row;
//   - the physical limit: a binary COPY of the same materialized rows into
//     identically indexed tables, indexes before or after, whichever is
//     faster;
//   - the peer's REFRESH MATERIALIZED VIEW, checked row for row against
//     recalc's tables;
//   - incremental runs after typical changes;
//   - the application's write latency (writes.go): 4 clients, 150
//     single-record updates a second, with no job, during a full
//     recalculation swapping in new tables and during one in place, and
//     during a ~1% rule-change job, with the samples that
//     found a writer waiting for a row lock or any lock;
//   - freshness, commit to visible, and read-your-writes (fresh.go);
//   - the read path through row-level security (rls.go) and the cost of
//     capture on an attached table (capture.go);
//   - dry runs of a change (`recalc plan FILE`, plan.go): a rule edit and a
//     membership change, held to ≤ 5 s at 50k records and ≤ 60 s at 1M;
//   - the peak RSS of every recalc process.
//
// The Go benchmarks (bench_test.go, `make bench-go`) cover the hot paths:
// import, full recalculation, computation in Go, access checks, change
// capture. They talk to the PostgreSQL named by DATABASE_URL; BENCH_SIZE
// sets the record count.
package bench
