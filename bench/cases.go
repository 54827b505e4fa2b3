package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/recalc-dev/recalc/internal/planner"
	"github.com/recalc-dev/recalc/internal/queue"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
)

// Case is one incremental recalculation: a change, then `recalc run`.
type Case struct {
	Name        string  `json:"case"`
	Change      string  `json:"change"`
	Seconds     float64 `json:"s"`
	Records     int64   `json:"records_recomputed"`
	RowsWritten int64   `json:"share_rows_written"`
	Closure     int64   `json:"closure_rows_written"`
	Ratio       float64 `json:"time_vs_full"`
	PeakRSS     int64   `json:"peak_rss_bytes"`
	Skipped     bool    `json:"skipped,omitempty"`
}

// errSkip says the org offers no change of a case's kind.
type errSkip string

func (e errSkip) Error() string { return string(e) }

// section is one configuration section as generic JSON, to edit.
type section []map[string]any

func loadSection(ctx context.Context, pool *pgxpool.Pool, name string) (section, error) {
	doc, err := store.Section(ctx, pool, name)
	if err != nil {
		return nil, err
	}
	var s section
	if err := json.Unmarshal(doc, &s); err != nil {
		return nil, fmt.Errorf("read section %s: %w", name, err)
	}
	return s, nil
}

// importSections writes sections to a model file and imports it.
func importSections(ctx context.Context, rc recalcCmd, dir string, sections map[string]section) error {
	doc, err := json.Marshal(sections)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "change.json")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		return err
	}
	defer os.Remove(path)
	_, err = rc.run(ctx, "import", path)
	return err
}

// incrementalCases makes each change of the benchmark in turn and times the
// `recalc run` that follows it.
func incrementalCases(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool, fullS float64) ([]Case, error) {
	cases := []struct {
		name   string
		change func() (string, error)
	}{
		{"rule change, ~1% of records", func() (string, error) { return ruleChange(ctx, cfg, rc, pool) }},
		{"owner change of 1000 records", func() (string, error) { return ownerChange(ctx, pool) }},
		{"membership change of the broadest rule target", func() (string, error) { return membershipChange(ctx, cfg, rc, pool) }},
		{"OWD tightening", func() (string, error) { return owdTightening(ctx, cfg, rc, pool) }},
		{"role move", func() (string, error) { return roleMove(ctx, cfg, rc, pool) }},
	}
	var out []Case
	for _, c := range cases {
		what, err := c.change()
		var skip errSkip
		if errors.As(err, &skip) { // small orgs may offer no such change
			cfg.logf("  %s: skipped: %v", c.name, err)
			out = append(out, Case{Name: c.name, Change: "skipped: " + err.Error(), Skipped: true})
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		cfg.logf("  %s: %s", c.name, what)
		p, err := rc.run(ctx, "run", "--workers", fmt.Sprint(cfg.Workers))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		rep, err := parseReport(p.Stdout)
		if err != nil {
			return nil, err
		}
		if rep.Kind != string(queue.Incremental) {
			return nil, fmt.Errorf("%s: the run was %q, not incremental", c.name, rep.Kind)
		}
		out = append(out, Case{Name: c.name, Change: what, Seconds: p.Elapsed.Seconds(), Records: rep.Records,
			RowsWritten: rep.Added + rep.Removed + rep.Updated, Closure: rep.Closure + rep.ClosRem,
			Ratio: p.Elapsed.Seconds() / fullS, PeakRSS: p.MaxRSS})
	}
	return out, nil
}

// ruleChange adds a criteria rule, revenue at or above a threshold, on the
// first object with room for one more (at most 300 rules, 50 of them
// criteria-based), with the threshold chosen so that the families of the
// records it matches hold about 1% of all records.
func ruleChange(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool) (string, error) {
	rules, err := loadSection(ctx, pool, "rules")
	if err != nil {
		return "", err
	}
	all, criteria := map[string]int{}, map[string]int{}
	for _, r := range rules {
		o, _ := r["object"].(string)
		all[o]++
		if r["type"] == "criteria" {
			criteria[o]++
		}
	}
	for _, object := range []string{"account", "lead", "project__c", "opportunity"} {
		if all[object] >= 300 || criteria[object] >= 50 {
			continue
		}
		var threshold float64
		var touched int64
		err := pool.QueryRow(ctx, `
			WITH fam AS (SELECT root_id, count(*) AS n FROM recalc.record GROUP BY root_id),
			best AS (
				SELECT root_id, max((fields->>'revenue')::numeric) AS revenue FROM recalc.record
				WHERE object = $1 AND jsonb_typeof(fields->'revenue') = 'number' GROUP BY root_id),
			cum AS (SELECT b.revenue, sum(f.n) OVER (ORDER BY b.revenue DESC) AS total FROM best b JOIN fam f USING (root_id))
			SELECT revenue, total FROM cum, (SELECT 0.01 * count(*) AS goal FROM recalc.record) g
			ORDER BY total <= goal DESC, CASE WHEN total <= goal THEN -total ELSE total END LIMIT 1`, object).Scan(&threshold, &touched)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("choose a revenue threshold: %w", err)
		}
		rule := map[string]any{"id": "bench_rule", "object": object, "type": "criteria", "target": "all_internal_users", "access": "read",
			"criteria": map[string]any{"conditions": []any{map[string]any{"field": "revenue", "op": "ge", "value": threshold}}}}
		if object == "account" {
			rule["opportunity_access"], rule["case_access"] = "read", "read"
		}
		if err := importSections(ctx, rc, cfg.Dir, map[string]section{"rules": append(rules, rule)}); err != nil {
			return "", err
		}
		return fmt.Sprintf("new %s rule: revenue ≥ %.0f shares read with all internal users (its records' families: %d records)", object, threshold, touched), nil
	}
	return "", errSkip("no object has room for one more criteria rule with a numeric revenue field")
}

// ownerChange gives 1000 records, spread over the objects that have owners
// of their own, new owners with plain SQL, as an application would.
func ownerChange(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	tag, err := pool.Exec(ctx, `
		WITH users AS (SELECT array_agg(id ORDER BY id) AS a FROM recalc.acl_user WHERE internal),
		pick AS (
			SELECT r.id, r.owner, row_number() OVER (ORDER BY md5(r.id)) AS n
			FROM recalc.record r JOIN recalc.acl_object o ON o.name = r.object
			WHERE NOT o.cbp ORDER BY md5(r.id) LIMIT 1000)
		UPDATE recalc.record r
		SET owner = CASE WHEN users.a[1 + pick.n % cardinality(users.a)] = pick.owner
		                 THEN users.a[1 + (pick.n + 1) % cardinality(users.a)]
		                 ELSE users.a[1 + pick.n % cardinality(users.a)] END
		FROM pick, users WHERE r.id = pick.id`)
	if err != nil {
		return "", fmt.Errorf("change owners: %w", err)
	}
	return fmt.Sprintf("UPDATE recalc.record SET owner = … on %d records", tag.RowsAffected()), nil
}

// membershipChange adds a user to the group that rules share the most
// records with, among the groups whose membership decides no owner rule
// (the planner says the change writes no share row; a group that is an
// owner rule's source changes which records that rule applies to).
func membershipChange(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool) (string, error) {
	rows, err := pool.Query(ctx, `
		SELECT substr(g.key, 7), count(DISTINCT s.rid) FROM recalc.acl_share s JOIN recalc.grantee g USING (gid)
		WHERE s.cause = 'rule' AND g.key LIKE 'group:%' GROUP BY g.key ORDER BY 2 DESC, 1`)
	if err != nil {
		return "", fmt.Errorf("rank the rule targets: %w", err)
	}
	var id string
	var records int64
	var ranked []struct {
		id      string
		records int64
	}
	if _, err := pgx.ForEachRow(rows, []any{&id, &records}, func() error {
		ranked = append(ranked, struct {
			id      string
			records int64
		}{id, records})
		return nil
	}); err != nil {
		return "", fmt.Errorf("rank the rule targets: %w", err)
	}
	doc, old, groups, err := storedSection(ctx, pool, "groups")
	if err != nil {
		return "", err
	}
	users, err := loadSection(ctx, pool, "users")
	if err != nil {
		return "", err
	}
	for i, t := range ranked {
		for _, g := range groups {
			members, _ := g["members"].([]any)
			if g["id"] != t.id {
				continue
			}
			for _, u := range users {
				m := "user:" + u["id"].(string)
				if slices.Contains(members, any(m)) {
					continue
				}
				g["members"] = append(members, m)
				p, err := planWith(doc, old, "groups", groups)
				if err != nil {
					return "", err
				}
				if !noShareRows(p) {
					g["members"] = members
					break // this group is an owner rule's source: try the next
				}
				if err := importSections(ctx, rc, cfg.Dir, map[string]section{"groups": groups}); err != nil {
					return "", err
				}
				return fmt.Sprintf("%s joins group %s, which rules share %d records with (the %s broadest rule target)", m, t.id, t.records, ordinal(i+1)), nil
			}
		}
	}
	return "", errSkip("every group that rules target decides an owner rule")
}

func ordinal(n int) string {
	switch n {
	case 1:
		return "1st"
	case 2:
		return "2nd"
	case 3:
		return "3rd"
	}
	return fmt.Sprintf("%dth", n)
}

// planWith returns the plan from old to the stored configuration doc with
// one section replaced.
func planWith(doc []byte, old *sharing.Org, name string, sec section) (*planner.Plan, error) {
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(doc, &cfg); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(sec)
	if err != nil {
		return nil, err
	}
	cfg[name] = raw
	newDoc, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cur, err := sharing.DecodeOrg(newDoc)
	if err != nil {
		return nil, err
	}
	return planner.Diff(old, cur, nil), nil
}

// owdTightening makes the first object with a public internal default private.
func owdTightening(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool) (string, error) {
	objects, err := loadSection(ctx, pool, "objects")
	if err != nil {
		return "", err
	}
	for _, o := range objects {
		if owd := o["internal_owd"]; owd == "public_read_only" || owd == "public_read_write" {
			o["internal_owd"] = "private"
			if err := importSections(ctx, rc, cfg.Dir, map[string]section{"objects": objects}); err != nil {
				return "", err
			}
			return fmt.Sprintf("%s: internal OWD %s → private", o["name"], owd), nil
		}
	}
	return "", errSkip("no object has a public internal OWD")
}

// roleMove moves a role under another parent. It picks the first move (by
// role id) that the planner says writes no share row: one that changes no
// owner rule's source and no account owner's child access, so only the
// closure changes. Other moves recompute the records of the owners whose
// rules change, which the rule-change case measures.
func roleMove(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool) (string, error) {
	doc, old, roles, err := storedSection(ctx, pool, "roles")
	if err != nil {
		return "", err
	}
	parent := map[string]string{}
	for _, r := range roles {
		p, _ := r["parent"].(string)
		parent[r["id"].(string)] = p
	}
	below := func(r, anc string) bool { // r is anc or under it
		for ; r != ""; r = parent[r] {
			if r == anc {
				return true
			}
		}
		return false
	}
	tries := 0
	for _, r := range roles {
		id := r["id"].(string)
		from := parent[id]
		if from == "" || parent[from] == "" {
			continue
		}
		for _, to := range roles {
			to := to["id"].(string)
			if to == from || below(to, id) || parent[to] != parent[from] {
				continue // only to a sibling of the current parent
			}
			if tries++; tries > 400 {
				return "", errSkip("no role move among the first 400 tried leaves the share rows alone")
			}
			r["parent"] = to
			p, err := planWith(doc, old, "roles", roles)
			if err != nil {
				return "", err
			}
			if !p.Full && noShareRows(p) {
				if err := importSections(ctx, rc, cfg.Dir, map[string]section{"roles": roles}); err != nil {
					return "", err
				}
				return fmt.Sprintf("role %s moves from under %s to under %s (%d candidate moves tried)", id, from, to, tries), nil
			}
			r["parent"] = from
		}
	}
	return "", errSkip("no role move leaves the share rows alone")
}

func noShareRows(p *planner.Plan) bool {
	for _, c := range p.Changes {
		if len(c.Selectors) > 0 {
			return false
		}
	}
	return true
}

// storedOrg returns the stored configuration and its decoded org.
func storedOrg(ctx context.Context, pool *pgxpool.Pool) ([]byte, *sharing.Org, error) {
	doc, err := store.StoredConfig(ctx, pool)
	if err != nil {
		return nil, nil, err
	}
	org, err := sharing.DecodeOrg(doc)
	return doc, org, err
}

// storedSection returns what storedOrg does, and the section name, to edit.
func storedSection(ctx context.Context, pool *pgxpool.Pool, name string) ([]byte, *sharing.Org, section, error) {
	doc, org, err := storedOrg(ctx, pool)
	if err != nil {
		return nil, nil, nil, err
	}
	sec, err := loadSection(ctx, pool, name)
	return doc, org, sec, err
}
