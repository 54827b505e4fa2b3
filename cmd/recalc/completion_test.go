package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestBashCompletion sources `recalc completion bash` in a real bash and
// completes typed words: commands, subcommands and flags (a flag completes
// only when the script tells the app that a flag is being typed).
func TestBashCompletion(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	bin := buildRecalc(t)
	for _, tc := range []struct {
		typed      string // the words on the line; a trailing space starts a new one
		want, miss []string
	}{
		{"recalc ru", []string{"run"}, []string{"resume"}},
		{"recalc ", []string{"init", "import", "run", "access", "completion"}, []string{"--full"}},
		{"recalc rls en", []string{"enable"}, []string{"disable"}},
		{"recalc run --f", []string{"--full"}, []string{"--workers", "help"}},
		{"recalc access --", []string{"--user", "--record", "--format"}, []string{"help"}},
		{"recalc rls enable --ow", []string{"--owner-column"}, nil},
	} {
		t.Run(tc.typed, func(t *testing.T) {
			script := `source <("$RECALC" completion bash)
read -ra COMP_WORDS <<<"$1"
[[ $1 == *" " ]] && COMP_WORDS+=("")
COMP_WORDS[0]=$RECALC
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_recalc_complete
printf '%s\n' "${COMPREPLY[@]}"`
			cmd := exec.Command("bash", "-c", script, "bash", tc.typed)
			cmd.Env = append(cmd.Environ(), "RECALC="+bin)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			got := strings.Fields(string(out))
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("%q completes to %q, want %q among them", tc.typed, got, w)
				}
			}
			for _, w := range tc.miss {
				if slices.Contains(got, w) {
					t.Errorf("%q completes to %q, want no %q", tc.typed, got, w)
				}
			}
		})
	}
}
