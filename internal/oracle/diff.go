package oracle

import "strings"

// Diff lists the lines only in want (<) and only in got (>), at most 30, for
// test failure messages that compare access CSVs.
func Diff(want, got string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var out []string
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			out = append(out, "< "+l)
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			out = append(out, "> "+l)
		}
	}
	if len(out) > 30 {
		out = append(out[:30], "...")
	}
	return strings.Join(out, "\n")
}
