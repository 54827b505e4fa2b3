package engine_test

import (
	"encoding/csv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/engine"
	"github.com/recalc-dev/recalc/internal/feed"
)

// levelsByPair reads the materialized access (access.WriteCSV) as a map.
func levelsByPair(t *testing.T, b *bundle) (map[[2]string]string, map[string]string) {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(b.access(t))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	out, obj := map[[2]string]string{}, map[string]string{}
	for _, r := range rows[1:] { // object, record, user, access
		out[[2]string{r[2], r[1]}] = r[3]
		obj[r[1]] = r[0]
	}
	return out, obj
}

// TestResyncAcrossASwap follows docs/feed.md's resync (in one REPEATABLE
// READ transaction, recalc.access_changes_head() and then the access
// mirrored) while a full run that changes nothing swaps new tables in
// between the two reads. The later read sees the swapped-in tables, whose
// rows committed after its snapshot, as empty; the feed after the head
// must then hold the swap's entry, which tells the consumer to resync
// again. A resync after the swap sees everything, with a head at or past
// that entry.
func TestResyncAcrossASwap(t *testing.T) {
	t.Parallel()
	b := setupOrg(t, minimalOrg(), engine.Options{})
	var want int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM recalc.visible_records('u1', 'account', 'read')`).Scan(&want); err != nil || want == 0 {
		t.Fatalf("u1 sees %d accounts (%v), want some", want, err)
	}
	consumer := connect(t, b.pool)
	resync := func(between func()) (head int64, seen int) {
		t.Helper()
		err := pgx.BeginTxFunc(b.ctx, consumer, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
			if err := tx.QueryRow(b.ctx, `SELECT recalc.access_changes_head()`).Scan(&head); err != nil {
				return err
			}
			between()
			return tx.QueryRow(b.ctx, `SELECT count(*) FROM recalc.visible_records('u1', 'account', 'read')`).Scan(&seen)
		})
		if err != nil {
			t.Fatalf("resync: %v", err)
		}
		return head, seen
	}
	swaps := func(since int64) (n int) {
		t.Helper()
		es, err := feed.Read(b.ctx, b.pool, since, feed.MaxLimit)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.Kind == feed.KindSwap {
				n++
			}
		}
		return n
	}
	head, seen := resync(func() { b.full(t, engine.Options{}) })
	if seen == want {
		t.Fatalf("u1 saw all %d accounts across the swap: the test no longer shows a swap emptying an older snapshot", want)
	}
	if swaps(head) != 1 {
		t.Fatalf("u1 saw %d of %d accounts in a resync across a swap, and the feed after its head %d has no swap entry", seen, want, head)
	}
	head, seen = resync(func() {})
	if seen != want || swaps(head) != 0 {
		t.Fatalf("the resync after the swap: u1 sees %d of %d accounts, %d swap entries after its head %d, want none", seen, want, swaps(head), head)
	}
}

// TestOWDChangeNamesControlledByParentObjects: a consumer re-reads the
// records of an owd entry's object (docs/feed.md). A controlled-by-parent
// child takes its access from its root's OWD, so opening account's OWD
// changes access to every case: the feed names them, by record or by an
// owd entry of their own object.
func TestOWDChangeNamesControlledByParentObjects(t *testing.T) {
	t.Parallel()
	org := strings.Replace(minimalOrg(), `{"name":"case","parent":"account","internal_owd":"private"}`,
		`{"name":"case","parent":"account","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}`, 1)
	org = strings.Replace(org, `,
	         {"id":"case_rep","object":"case","type":"owner","source":"group:g2","target":"group:g3","access":"edit"}`, "", 1)
	b := setupOrg(t, org, engine.Options{})
	before, objOf := levelsByPair(t, b)
	head, err := feed.Head(b.ctx, b.pool)
	if err != nil {
		t.Fatal(err)
	}
	b.importFile(t, `{"objects":[{"name":"account","internal_owd":"public_read_only"},{"name":"case","parent":"account","internal_owd":"controlled_by_parent","external_owd":"controlled_by_parent"}]}`)
	b.run(t, engine.Options{})
	after, _ := levelsByPair(t, b)
	var es []feed.Entry
	for since := head; ; {
		got, err := feed.Read(b.ctx, b.pool, since, feed.MaxLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			break
		}
		es, since = append(es, got...), got[len(got)-1].Cursor
	}
	records, owd := map[string]bool{}, map[string]bool{}
	for _, e := range es {
		switch e.Kind {
		case feed.KindRecord:
			records[e.Key] = true
		case feed.KindOWD:
			owd[e.Key] = true
		}
	}
	var missed []string
	for k, l := range after {
		if before[k] != l && !records[k[1]] && !owd[objOf[k[1]]] {
			missed = append(missed, k[0]+"@"+k[1]+":"+before[k]+"->"+l)
		}
	}
	if len(missed) > 0 {
		t.Fatalf("%d (user, record) accesses changed that no entry names by record or object (entries: %+v); e.g. %v",
			len(missed), es, missed[:min(5, len(missed))])
	}
}
