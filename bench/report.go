package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// TargetLine is one goal of the benchmark and whether this run met it.
type TargetLine struct {
	Measure string `json:"measure"`
	Value   string `json:"value"`
	Target  string `json:"target"`
	Met     bool   `json:"met"`
}

const mib = 1 << 20

func targets(r *SizeRun) []TargetLine {
	out := []TargetLine{{"full recalc rows/s vs raw COPY", fmt.Sprintf("%.2f×", r.Copy.Ratio), "≥ 0.5×", r.Copy.Ratio >= 0.5}}
	if r.Peer != nil {
		out = append(out, TargetLine{"full recalc vs materialized-view peer", fmt.Sprintf("%.1f× faster", r.Peer.Ratio), "≥ 3× faster", r.Peer.Ratio >= 3})
	}
	out = append(out,
		TargetLine{"peak RSS", fmt.Sprintf("%.0f MiB", float64(r.PeakRSS)/mib), "≤ 256 MiB", r.PeakRSS <= 256*mib},
		TargetLine{"access check p99", fmt.Sprintf("%.2f ms", r.Access.P99ms), "≤ 1 ms", r.Access.P99ms <= 1})
	out = append(out, rlsTargets(r)...)
	for _, c := range r.Incremental {
		if c.Skipped {
			continue
		}
		t := TargetLine{Measure: c.Name, Value: fmt.Sprintf("%.2f%% of full, %d share rows", 100*c.Ratio, c.RowsWritten)}
		if strings.HasPrefix(c.Name, "rule change") {
			t.Target, t.Met = "≤ 3% of full", c.Ratio <= 0.03
		} else if !strings.HasPrefix(c.Name, "owner change") {
			t.Target, t.Met = "≤ 1% of full, 0 share rows", c.Ratio <= 0.01 && c.RowsWritten == 0
		} else {
			continue // no target
		}
		out = append(out, t)
	}
	return out
}

// Print writes the results as tables.
func (res *Results) Print(w io.Writer) {
	fmt.Fprintf(w, "recalc bench, %s, %d CPUs, PostgreSQL %s\n", res.Date, res.Host.CPUs, res.Postgres.Version)
	for _, r := range res.Runs {
		fmt.Fprintf(w, "\n== %d records: %d users, %d rules, %d manual/apex shares, %d team entries; import %.1f s\n",
			r.Records, r.Org.Users, r.Org.Rules, r.Org.Shares, r.Org.Teams, r.ImportS)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "measure\ttime\trows\trows/s\tratio")
		row := func(name string, s float64, rows int64, ratio string) {
			rps := "-"
			if rows > 0 && s > 0 {
				rps = fmt.Sprintf("%.0f", float64(rows)/s)
			}
			fmt.Fprintf(tw, "%s\t%.3f s\t%d\t%s\t%s\n", name, s, rows, rps, ratio)
		}
		row("full recalc (blue/green, into empty tables)", r.Full.Seconds, r.Full.ShareRows, "1")
		row("nightly full recalc (over current tables, + drift count)", r.Nightly.Seconds, r.Nightly.ShareRows, fmt.Sprintf("%.2f× the full time", r.Nightly.Seconds/r.Full.Seconds))
		if r.InPlace != nil {
			row("full recalc in place", r.InPlace.Seconds, r.InPlace.ShareRows, fmt.Sprintf("%.2f× the blue/green time", r.InPlace.Seconds/r.Full.Seconds))
		}
		row("raw COPY ("+r.Copy.Method+")", r.Copy.Seconds, r.Copy.Rows, fmt.Sprintf("recalc at %.2f× COPY's speed", r.Copy.Ratio))
		if r.Peer != nil {
			row("materialized-view peer", r.Peer.Seconds, r.Full.ShareRows, fmt.Sprintf("recalc %.1f× faster", r.Peer.Ratio))
		}
		for _, c := range r.Incremental {
			if c.Skipped {
				fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\n", c.Name, c.Change)
				continue
			}
			row(c.Name, c.Seconds, c.RowsWritten, fmt.Sprintf("%.2f%% of full", 100*c.Ratio))
		}
		tw.Flush()
		fmt.Fprintf(w, "raw COPY: %.3f s into indexed tables, %.3f s with the indexes built after (%d rows of acl_share, acl_record and acl_member)\n",
			r.Copy.IndexedS, r.Copy.IndexLastS, r.Copy.Rows)
		fmt.Fprintf(w, "access check: p50 %.3f ms, p99 %.3f ms over %d random (user, record) pairs\n", r.Access.P50ms, r.Access.P99ms, r.Access.Samples)
		fmt.Fprintf(w, "visible list: p50 %.1f ms, p99 %.1f ms for %d records (%s)\n", r.Visible.P50ms, r.Visible.P99ms, r.Visible.Rows, r.Visible.Query)
		printRLS(w, r.RLS)
		for _, l := range r.Writes {
			fmt.Fprintf(w, "application writes (%d clients, %d/s), %s: p50 %.1f ms, p99 %.1f ms, max %.0f ms, %d of %d over 100 ms, %d samples waiting for a row lock (%d for any lock)\n",
				writeClients, writeRate, l.During, l.P50ms, l.P99ms, l.MaxMs, l.Over100, l.Writes, l.RowLockWaits, l.LockWaits)
		}
		fmt.Fprintf(w, "peak RSS of recalc: %.0f MiB (import %.0f MiB, full %.0f MiB)\n",
			float64(r.PeakRSS)/mib, float64(r.ImportRSS)/mib, float64(r.Full.PeakRSS)/mib)
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "target\tvalue\tgoal\tmet")
		for _, t := range r.Targets {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", t.Measure, t.Value, t.Target, t.Met)
		}
		tw.Flush()
	}
	for _, s := range res.Scaling {
		fmt.Fprintf(w, "\nscaling %d → %d records (%.0f×): full recalc time %.2f× (goal for 1M → 10M: ≤ 11×)\n", s.From, s.To, s.Records, s.Time)
	}
}

// rlsTargets are the read path's goals (issue 13): at 1M records (10M),
// a primary-key lookup ≤ 1 ms (2 ms), a page of 50 ≤ 20 ms (50 ms) and a
// visible_records page of 1,000 ≤ 20 ms (50 ms), p99, through the policy.
func rlsTargets(r *SizeRun) []TargetLine {
	if r.RLS == nil {
		return nil
	}
	pk, page := 1.0, 20.0
	if r.Records >= 10_000_000 {
		pk, page = 2, 50
	}
	var out []TargetLine
	for _, u := range r.RLS.Users {
		for _, m := range u.Measures {
			goal := page
			switch {
			case m.Name == "count(*)":
				continue
			case m.Name == "primary-key lookup":
				goal = pk
			}
			out = append(out, TargetLine{fmt.Sprintf("RLS %s p99, user seeing %s (%d)", m.Name, u.Kind, u.Visible),
				fmt.Sprintf("%.2f ms (%.2f ms off)", m.On.P99ms, m.Off.P99ms), fmt.Sprintf("≤ %.0f ms", goal), m.On.P99ms <= goal})
			if m.PerUser != nil {
				out = append(out, TargetLine{fmt.Sprintf("RLS %s p99, user seeing %s (%d), per-user plans", m.Name, u.Kind, u.Visible),
					fmt.Sprintf("%.2f ms (%.2f ms off)", m.PerUser.P99ms, m.Off.P99ms), fmt.Sprintf("≤ %.0f ms", goal), m.PerUser.P99ms <= goal})
			}
		}
	}
	return out
}

// printRLS writes the read path's measures, each beside RLS off.
func printRLS(w io.Writer, res *RLSResult) {
	if res == nil {
		return
	}
	fmt.Fprintf(w, "read path through row-level security, application table of %d accounts (p50 / p99, ms):\n", res.Accounts)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "user\tsees\tquery\tRLS on\tper-user plans\tRLS off")
	for _, u := range res.Users {
		for _, m := range u.Measures {
			per := "-"
			if m.PerUser != nil {
				per = fmt.Sprintf("%.2f / %.2f", m.PerUser.P50ms, m.PerUser.P99ms)
			}
			fmt.Fprintf(tw, "%s (%s)\t%d\t%s\t%.2f / %.2f\t%s\t%.2f / %.2f\n", u.User, u.Kind, u.Visible, m.Name, m.On.P50ms, m.On.P99ms, per, m.Off.P50ms, m.Off.P99ms)
		}
	}
	tw.Flush()
}
