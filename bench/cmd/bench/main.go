// Command bench measures recalc against the physical limit and a pure-SQL
// peer, at one or more org sizes, and writes the results as JSON:
//
//	DATABASE_URL=postgres://... go run ./bench/cmd/bench -sizes 1000000 -recalc bin/recalc -out bench/results.json
//
// `make bench` runs it (BENCH_SIZE sets -sizes). See package bench.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/recalc-dev/recalc/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := bench.Config{ServerURL: os.Getenv("DATABASE_URL"), Progress: os.Stderr}
	sizes := flag.String("sizes", "1000000", "record counts to measure, comma-separated (each on a fresh database)")
	flag.Int64Var(&cfg.Seed, "seed", 1, "generator seed")
	flag.StringVar(&cfg.Recalc, "recalc", "bin/recalc", "the recalc binary to measure")
	flag.StringVar(&cfg.Database, "db", "recalc_bench", "database to create (dropped first) on DATABASE_URL's server")
	flag.IntVar(&cfg.Workers, "workers", 2, "recalc run --workers")
	flag.IntVar(&cfg.Samples, "samples", 2000, "access checks to time")
	flag.IntVar(&cfg.HeavyMax, "heavy-max", 2_000_000, "largest size at which the in-place run and the materialized-view peer are measured (0: every size)")
	flag.DurationVar(&cfg.FreshFor, "fresh-for", time.Minute, "how long freshness is measured at each write rate, with recalc watch running (0: skip)")
	flag.DurationVar(&cfg.PlanMax, "plan-max", 10*time.Minute, "longest a timed `recalc plan FILE` may run before it is stopped and reported as timed out")
	flag.IntVar(&cfg.CopyRows, "copy-rows", 1_000_000, "rows of each timed COPY into an application table, with capture and without")
	out := flag.String("out", "bench/results.json", "where to write the results (- for stdout only)")
	flag.Parse()
	if cfg.CopyRows < 1 {
		return fmt.Errorf("-copy-rows %d: want at least 1 row", cfg.CopyRows)
	}
	if cfg.ServerURL == "" {
		return fmt.Errorf("set DATABASE_URL to a database on the server to measure (make bench does)")
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1000 {
			return fmt.Errorf("bad size %q in -sizes: want record counts of at least 1000", s)
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	dir, err := os.MkdirTemp("", "recalc-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.Dir = dir
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	res.Print(os.Stdout)
	if *out == "-" {
		return nil
	}
	doc, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, append(doc, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", *out)
	return nil
}
