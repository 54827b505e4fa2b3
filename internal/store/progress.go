package store

import (
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// importProgressEvery is how often a lasting import logs its progress,
// from its start: an import of 10,000,000 records takes minutes.
const importProgressEvery = 2 * time.Second

// importProgress logs, every importProgressEvery until end, the import's
// phase (stage: the file read into the staging table; store: the sections
// validated and written) and the records, shares and team entries staged.
type importProgress struct {
	log     zerolog.Logger
	start   time.Time
	phase   atomic.Value // string
	entries atomic.Int64
	stop    chan struct{}
	done    chan struct{}
}

func startImportProgress(log zerolog.Logger) *importProgress {
	p := &importProgress{log: log, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	p.phase.Store("stage")
	go func() {
		defer close(p.done)
		t := time.NewTicker(importProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.log.Info().Str("phase", p.phase.Load().(string)).Int64("entries_staged", p.entries.Load()).
					Int64("elapsed_ms", time.Since(p.start).Milliseconds()).Msg("import progress")
			}
		}
	}()
	return p
}

// end stops the reports.
func (p *importProgress) end() {
	close(p.stop)
	<-p.done
}
