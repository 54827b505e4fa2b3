// Package bench holds recalc's benchmarks and, in bench/gen, the realistic
// org generator they run on. Benchmarks talk to the real PostgreSQL named by
// DATABASE_URL (make bench provides one); BENCH_SIZE sets the record count.
package bench
