package engine_test

import (
	"strings"
	"testing"

	"github.com/recalc-dev/recalc/internal/oracle"
)

// preDefer is the access that records written after `recalc defer`
// returned may show until `recalc resume`, even once an import has finished
// a job that the deferral paused: theirs when defer returned (materialized),
// or what the oracle computes from the records as they were then (a chunk
// that read no deferral, or a full job's chunk done before it, computed it
// from them).
type preDefer struct {
	ids                  []string
	materialized, oracle map[string]string // record: its lines of the access CSV
}

// snapshotPreDefer reads the access to records ids and what the oracle
// computes for them from what is stored now.
func snapshotPreDefer(t *testing.T, b *bundle, ids ...string) *preDefer {
	t.Helper()
	b.syncRecords(t)
	return &preDefer{ids: ids, materialized: accessByRecord(b.access(t), ids), oracle: accessByRecord(oracle.CSV(oracle.Access(b.cur)), ids)}
}

// check requires the access to each record of p to be one of p's two.
func (p *preDefer) check(t *testing.T, b *bundle, when string) {
	t.Helper()
	got := accessByRecord(b.access(t), p.ids)
	for _, id := range p.ids {
		if got[id] != p.materialized[id] && got[id] != p.oracle[id] {
			t.Errorf("access to %s %s:\n%s\nwant it as when `recalc defer` returned:\n%s\nor as the oracle computes it from the records then:\n%s",
				id, when, got[id], p.materialized[id], p.oracle[id])
		}
	}
}

// accessByRecord returns, for each record of ids, its lines of an access
// CSV (object, record, user, access).
func accessByRecord(csv string, ids []string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(csv, "\n") {
		f := strings.Split(line, ",")
		if len(f) < 2 {
			continue
		}
		for _, id := range ids {
			if f[1] == id {
				out[id] += line + "\n"
			}
		}
	}
	return out
}
