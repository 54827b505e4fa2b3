package cli

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
	"github.com/recalc-dev/recalc/internal/sharing"
	"github.com/recalc-dev/recalc/internal/store"
)

// limitFlags are the flags of the commands that read a model file: one per
// field of model.Limits, named as the model package's messages name them,
// each with its RECALC_ environment variable.
func limitFlags() []cli.Flag {
	def := model.DefaultLimits()
	var out []cli.Flag
	for _, l := range model.LimitInfos() {
		zero := "no limit"
		if l.Name == model.LimitClosureWarn {
			zero = "no warning"
		}
		out = append(out, &cli.Int64Flag{Name: l.Name, Value: *l.Field(&def), EnvVars: []string{l.EnvVar()},
			Usage: fmt.Sprintf("%s (0: %s; see docs/limits.md)", l.Usage, zero)})
	}
	return out
}

// limitsFrom reads limitFlags.
func limitsFrom(c *cli.Context) (model.Limits, error) {
	lim := model.DefaultLimits()
	for _, l := range model.LimitInfos() {
		v := c.Int64(l.Name)
		if err := outOfRange(c, []flagRange{{l.Name, v, v >= 0, "0 (no limit) or more"}}); err != nil {
			return lim, err
		}
		*l.Field(&lim) = v
	}
	return lim, nil
}

// warnClosure logs a warning when the stored configuration's closure may
// exceed limit entries (0: never), for `recalc plan` with no file; an import
// has the estimate already (store.Result.ClosureEstimate). It is advice: it
// fails nothing.
func warnClosure(ctx context.Context, q pg.Querier, log zerolog.Logger, limit int64) {
	if limit <= 0 {
		return
	}
	cfg, err := store.LoadConfig(ctx, q)
	if err != nil {
		log.Warn().Err(err).Msg("cannot estimate the closure's size")
		return
	}
	ix, err := cfg.Validate()
	if err != nil {
		log.Warn().Err(err).Msg("cannot estimate the closure's size")
		return
	}
	warnClosureEstimate(log, sharing.NewOrg(ix).ClosureEstimate(), limit)
}

// warnClosureEstimate logs a warning when est closure entries exceed limit
// (0: never).
func warnClosureEstimate(log zerolog.Logger, est, limit int64) {
	if limit > 0 && est > limit {
		log.Warn().Int64("closure_estimate", est).Int64("closure_warn", limit).
			Msgf("the closure (acl_member) may reach %d entries, over --%s: role, territory and group hierarchies grow it as their depth times their users",
				est, model.LimitClosureWarn)
	}
}
