// Command gen writes a generated org (see package bench/gen) as a recalc model file to stdout:
//
//	go run ./bench/cmd/gen -records 50000 -seed 1 > org.json
//
// The same flags always give the same file. A one-line summary goes to stderr.
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/recalc-dev/recalc/bench/gen"
)

func main() {
	opt := gen.NewOptions(0, 0)
	flag.IntVar(&opt.Records, "records", 10000, "number of records")
	flag.Int64Var(&opt.Seed, "seed", 1, "random seed: the same seed gives the same org")
	flag.IntVar(&opt.Users, "users", 0, "number of users (0: records/20 within [20, 5000])")
	flag.Float64Var(&opt.ExternalShare, "external", opt.ExternalShare, "fraction of external users")
	flag.Float64Var(&opt.InactiveShare, "inactive", opt.InactiveShare, "fraction of inactive users")
	quiet := flag.Bool("q", false, "print no summary on stderr")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "gen: unexpected arguments %q; the org goes to stdout\n", flag.Args())
		os.Exit(2)
	}
	s, err := gen.Write(os.Stdout, opt)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gen: %v\n", err)
		os.Exit(1)
	}
	if !*quiet {
		objs := make([]string, 0, len(s.Records))
		for o, n := range s.Records {
			objs = append(objs, fmt.Sprintf("%s %d", o, n))
		}
		sort.Strings(objs)
		rules := make([]string, 0, len(s.RulesByObject))
		for o, n := range s.RulesByObject {
			rules = append(rules, fmt.Sprintf("%s %d", o, n))
		}
		sort.Strings(rules)
		fmt.Fprintf(os.Stderr, "gen: %d users, %d roles, %d groups, %d rules (%s); records: %s; busiest owner %d records; %d shares, %d team entries; %d bytes\n",
			s.Users, s.Roles, s.Groups, s.Rules, strings.Join(rules, ", "), strings.Join(objs, ", "), s.MaxOwned, s.Shares, s.Teams, s.Bytes)
	}
}
