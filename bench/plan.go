package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// PlanCase is one timed `recalc plan FILE`: the dry run of importing a
// change, which stores nothing. Issue 14 asks for ≤ 5 s at 50k records and
// ≤ 60 s at 1M, for a rule edit and a membership change.
type PlanCase struct {
	Name    string  `json:"name"`
	Change  string  `json:"change"`
	Seconds float64 `json:"s"`
	Gained  int64   `json:"pairs_gaining"`
	Lost    int64   `json:"pairs_losing"`
	PeakRSS int64   `json:"peak_rss_bytes"`
	Skipped bool    `json:"skipped,omitempty"`
	// TimedOut: stopped at -plan-max; Seconds is then that limit.
	TimedOut bool `json:"timed_out,omitempty"`
}

// planCases times `recalc plan FILE` for a rule edit (the first criteria
// rule giving read gives edit instead) and a membership change (an active
// user joins the group that rules share the most records with). Neither is
// imported.
func planCases(ctx context.Context, cfg Config, rc recalcCmd, pool *pgxpool.Pool) ([]PlanCase, error) {
	cases := []struct {
		name   string
		change func() (string, map[string]section, error)
	}{
		{"rule edit: read to edit", func() (string, map[string]section, error) { return planRuleEdit(ctx, pool) }},
		{"membership: a user joins the broadest rule target", func() (string, map[string]section, error) { return planMembership(ctx, pool) }},
	}
	var out []PlanCase
	for _, c := range cases {
		what, sections, err := c.change()
		if err != nil {
			if skip, ok := err.(errSkip); ok {
				cfg.logf("  %s: skipped: %v", c.name, skip)
				out = append(out, PlanCase{Name: c.name, Change: "skipped: " + skip.Error(), Skipped: true})
				continue
			}
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		cfg.logf("  %s: %s", c.name, what)
		pc, err := timePlan(ctx, rc, cfg.Dir, sections, cfg.PlanMax)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		pc.Name, pc.Change = c.name, what
		out = append(out, pc)
	}
	return out, nil
}

// timePlan writes sections to a model file and times `recalc plan --format
// json` on it, stopping it after limit.
func timePlan(ctx context.Context, rc recalcCmd, dir string, sections map[string]section, limit time.Duration) (PlanCase, error) {
	doc, err := json.Marshal(sections)
	if err != nil {
		return PlanCase{}, err
	}
	path := filepath.Join(dir, "plan.json")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		return PlanCase{}, err
	}
	defer os.Remove(path)
	runCtx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	p, err := rc.run(runCtx, "plan", "--format", "json", path)
	if err != nil && runCtx.Err() != nil && ctx.Err() == nil {
		return PlanCase{Seconds: limit.Seconds(), TimedOut: true}, nil
	}
	if err != nil {
		return PlanCase{}, err
	}
	var rep struct {
		Gained int64 `json:"pairs_gaining"`
		Lost   int64 `json:"pairs_losing"`
	}
	if err := json.Unmarshal(p.Stdout, &rep); err != nil {
		return PlanCase{}, fmt.Errorf("read the dry run's report: %w", err)
	}
	return PlanCase{Seconds: p.Elapsed.Seconds(), Gained: rep.Gained, Lost: rep.Lost, PeakRSS: p.MaxRSS}, nil
}

// planRuleEdit is the rules section with the first criteria rule that
// gives read access giving edit instead.
func planRuleEdit(ctx context.Context, pool *pgxpool.Pool) (string, map[string]section, error) {
	rules, err := loadSection(ctx, pool, "rules")
	if err != nil {
		return "", nil, err
	}
	for _, r := range rules {
		if r["type"] == "criteria" && r["access"] == "read" {
			r["access"] = "edit"
			return fmt.Sprintf("criteria rule %v on %v gives edit instead of read", r["id"], r["object"]),
				map[string]section{"rules": rules}, nil
		}
	}
	return "", nil, errSkip("no criteria rule gives read access")
}

// planMembership is the groups section with an active user (active unless
// the file says otherwise), not yet a direct member, added to the group that rules share the most records with.
func planMembership(ctx context.Context, pool *pgxpool.Pool) (string, map[string]section, error) {
	var id string
	var records int64
	err := pool.QueryRow(ctx, `
		SELECT substr(g.key, 7), count(DISTINCT s.rid) FROM recalc.acl_share s JOIN recalc.grantee g USING (gid)
		WHERE s.cause = 'rule' AND g.key LIKE 'group:%' GROUP BY g.key ORDER BY 2 DESC, 1 LIMIT 1`).Scan(&id, &records)
	if err != nil {
		return "", nil, errSkip("no rule shares records with a group")
	}
	groups, err := loadSection(ctx, pool, "groups")
	if err != nil {
		return "", nil, err
	}
	users, err := loadSection(ctx, pool, "users")
	if err != nil {
		return "", nil, err
	}
	for _, g := range groups {
		if g["id"] != id {
			continue
		}
		members, _ := g["members"].([]any)
		for _, u := range users {
			m := "user:" + fmt.Sprint(u["id"])
			if active, set := u["active"].(bool); (set && !active) || slices.Contains(members, any(m)) {
				continue
			}
			g["members"] = append(members, m)
			return fmt.Sprintf("%s joins group %s, which rules share %d records with", m, id, records),
				map[string]section{"groups": groups}, nil
		}
	}
	return "", nil, errSkip("every active user is in the broadest rule target already")
}

// planTargets holds each timed dry run to issue 14's goal: ≤ 5 s up to
// 50k records, ≤ 60 s up to 1M; none is set above 1M.
func planTargets(records int, cases []PlanCase) []TargetLine {
	var limit float64
	switch {
	case records <= 50_000:
		limit = 5
	case records <= 1_000_000:
		limit = 60
	default:
		return nil
	}
	var out []TargetLine
	for _, c := range cases {
		if c.Skipped {
			continue
		}
		got := fmt.Sprintf("%.2f s, %d pairs change", c.Seconds, c.Gained+c.Lost)
		if c.TimedOut {
			got = fmt.Sprintf("stopped after %.0f s", c.Seconds)
		}
		out = append(out, TargetLine{"recalc plan FILE, " + c.Name, got, fmt.Sprintf("≤ %.0f s", limit), !c.TimedOut && c.Seconds <= limit})
	}
	return out
}
