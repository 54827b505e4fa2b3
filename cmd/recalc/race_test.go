package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRaceProcessesOnOneFullJob starts three real `recalc run` processes on
// one full job at random offsets, round after round (finding 12: only one
// process may finalize a full job, and only once its staging step is
// built). Some rounds mix in plain `run`s, and in every other round they
// start only once the full job is running, so that they join it. Every
// process exits 0, `recalc verify` finds no drift after each round, and at
// the end the tables equal a from-scratch full run.
func TestRaceProcessesOnOneFullJob(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs processes on a 3k-record org")
	}
	o := newProcessOrg(t, 3000)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(12, 12))
	full := []string{"run", "--full", "--in-place=false", "--chunk-size", "40", "--workers", "2"}
	plain := []string{"run", "--chunk-size", "40", "--workers", "2"}
	mixes := [][2][]string{{full, full}, {plain, full}, {plain, plain}}
	start := time.Now()
	joins, rounds := 0, 0
	for round := 0; round < 15 && (round < 5 || time.Since(start) < 25*time.Second); round++ {
		rounds++
		o.changeRecords(97, round) // something for a plain run to do
		args := append([][]string{full}, mixes[round%len(mixes)][:]...)
		outs := make([]bytes.Buffer, len(args))
		cmds := make([]*exec.Cmd, len(args))
		started := func(i int) {
			cmds[i] = o.command(args[i]...)
			cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
			if err := cmds[i].Start(); err != nil {
				t.Fatal(err)
			}
		}
		started(0)
		if round%2 == 1 { // the others start once the full job runs
			deadline := time.Now().Add(20 * time.Second)
			for {
				var n int
				_ = o.pool.QueryRow(ctx, `SELECT count(*) FROM recalc.job WHERE status = 'running' AND kind = 'full'`).Scan(&n)
				if n > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("round %d: no full job ran within 20s", round)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		offsets := []int{rng.IntN(400), rng.IntN(400)}
		slices.Sort(offsets)
		begun := time.Now()
		for i, off := range offsets {
			time.Sleep(time.Until(begun.Add(time.Duration(off) * time.Millisecond)))
			started(i + 1)
		}
		errs := make([]error, len(cmds))
		for i, cmd := range cmds {
			errs[i] = cmd.Wait()
		}
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: recalc %s: %v\n%s", round, strings.Join(args[i], " "), err, outs[i].String())
			}
			if args[i][1] != "--full" && joinedFull(outs[i].String()) {
				joins++
			}
		}
		if out, err := o.command("verify").CombinedOutput(); err != nil {
			t.Fatalf("round %d: recalc verify: %v\n%s", round, err, out)
		}
	}
	t.Logf("%d rounds in %s; plain runs joined a running full job %d times", rounds, time.Since(start).Round(time.Millisecond), joins)
	if joins == 0 {
		t.Fatal("no plain run joined a running full job: the scenario was not exercised")
	}
	o.checkEqualsFull(fmt.Sprintf("after %d rounds", rounds))
}

// joinedFull reports whether a run's JSON log says it joined a full job.
func joinedFull(log string) bool {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var l struct {
			Message string `json:"message"`
			Kind    string `json:"kind"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Message == "joining unfinished job" && l.Kind == "full" {
			return true
		}
	}
	return false
}
