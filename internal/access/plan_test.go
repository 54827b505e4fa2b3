package access_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestAccessChecksProbeFromShareRows: can_access and access_level read the
// record's share rows and probe the user's closure entries by gid for each,
// even in generic plans made while the planner believes every record has
// many share rows and every user few entries (as it did at 10,000,000
// records, where can_access then read all 958 entries of a user high in the
// hierarchy at every call). auto_explain shows the plans of the functions'
// statements.
func TestAccessChecksProbeFromShareRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var roles, users, recs []string
	for i := range 200 {
		roles = append(roles, fmt.Sprintf(`{"id": "r%d", "parent": "top"}`, i))
		users = append(users, fmt.Sprintf(`{"id": "w%d", "role": "r%d"}`, i, i))
		recs = append(recs, fmt.Sprintf(`{"object": "account", "id": "a%d", "owner": "w%d"}`, i, i))
	}
	b.model(t, `{"objects": [{"name": "account", "internal_owd": "private"},
			{"name": "contact", "parent": "account", "internal_owd": "controlled_by_parent", "external_owd": "controlled_by_parent"}],
		"roles": [{"id": "top"}, `+strings.Join(roles, ",")+`],
		"users": [{"id": "boss", "role": "top"}, `+strings.Join(users, ",")+`],
		"records": [`+strings.Join(recs, ",")+`, {"object": "contact", "id": "c1", "owner": "w9", "parent": "a5"}]}`)
	b.exec(t, `ALTER TABLE recalc.acl_share ALTER COLUMN rid SET (n_distinct = 2)`,
		`ANALYZE recalc.acl_share`, `ANALYZE recalc.acl_member`)

	cfg := b.pool.Config().ConnConfig.Copy()
	var notices []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	conn, err := pgx.ConnectConfig(b.ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(b.ctx)
	for _, sql := range []string{`LOAD 'auto_explain'`, `SET auto_explain.log_min_duration = 0`,
		`SET auto_explain.log_nested_statements = on`, `SET auto_explain.log_level = notice`,
		`SET auto_explain.log_format = json`, `SET plan_cache_mode = force_generic_plan`} {
		var pgErr *pgconn.PgError
		if _, err := conn.Exec(b.ctx, sql); errors.As(err, &pgErr) && (pgErr.Code == "42501" || pgErr.Code == "58P01") {
			t.Skipf("auto_explain needs a superuser and the module installed: %v", err)
		} else if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for _, tc := range []struct {
		user, object, record string
		want                 bool
	}{
		{"boss", "account", "a7", true}, {"w3", "account", "a3", true}, {"w3", "account", "a4", false},
		// c1 takes its access from a5's share rows (its access root)
		{"boss", "contact", "c1", true}, {"w5", "contact", "c1", true}, {"w3", "contact", "c1", false},
	} {
		for _, fn := range []string{"can_access", "access_level"} {
			notices = notices[:0]
			var got bool
			sql := `SELECT recalc.can_access($1, $2, $3, 'read')`
			if fn == "access_level" {
				sql = `SELECT recalc.access_level($1, $2, $3) <> 'none'`
			}
			if err := conn.QueryRow(b.ctx, sql, tc.user, tc.object, tc.record).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("%s(%s, %s): %v, want %v", fn, tc.user, tc.record, got, tc.want)
			}
			probes := 0
			for _, n := range notices {
				for _, scan := range memberScans(t, n) {
					probes++
					if !strings.Contains(scan, "gid") {
						t.Errorf("%s(%s, %s) reads the user's closure entries without a gid: %s", fn, tc.user, tc.record, scan)
					}
				}
			}
			if probes == 0 {
				t.Errorf("%s(%s, %s): no plan read acl_member (%d plans logged)", fn, tc.user, tc.record, len(notices))
			}
		}
	}
}

// planNode is a node of an auto_explain JSON plan.
type planNode struct {
	Relation  string     `json:"Relation Name"`
	IndexCond string     `json:"Index Cond"`
	Recheck   string     `json:"Recheck Cond"` // a bitmap heap scan's
	Plans     []planNode `json:"Plans"`
}

// memberScans returns, for each node of an auto_explain JSON plan that reads
// acl_member, its index condition ("" for a scan without one).
func memberScans(t *testing.T, notice string) []string {
	t.Helper()
	// The notice is "duration: ... plan:" and the plan's JSON.
	i := strings.Index(notice, "{")
	if i < 0 {
		t.Fatalf("auto_explain: no plan in %.200q", notice)
	}
	var doc struct{ Plan planNode }
	if err := json.Unmarshal([]byte(notice[i:]), &doc); err != nil {
		t.Fatalf("auto_explain: %v: %.200s", err, notice)
	}
	var out []string
	var walk func(n planNode)
	walk = func(n planNode) {
		if n.Relation == "acl_member" {
			out = append(out, n.IndexCond+n.Recheck)
		}
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(doc.Plan)
	return out
}
