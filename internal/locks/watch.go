package locks

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Watch reads, every watchPoll until the returned stop is called, which
// sessions block conn's lock waits (blockers), on a session of its own
// opened as conn was (its configuration) at the first read: a command
// whose locks come at once opens none. stop closes that session and
// returns the sessions last seen blocking a wait, nil when none was (the
// waits too short to be seen, or the session not opened), the same again
// if called again. A session of its own that ends is opened again. Read once a
// command's tries have failed, the sessions holding any lock on its tables
// (Holders) named readers that blocked nothing (a lock its own did not
// conflict with, or one granted once its last try let go), and missed a
// blocker whose lock is on another table (a partition, say) or which
// waited ahead of it. conn must not be used by Watch's caller for anything
// but the command meanwhile: Watch reads its pid and configuration first.
func Watch(ctx context.Context, conn *pgx.Conn) (stop func() []string) {
	pid, cfg := conn.PgConn().PID(), conn.Config()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan []string, 1)
	go func() {
		var seen []string
		var side *pgx.Conn
		defer func() {
			if side != nil {
				_ = side.Close(context.Background())
			}
			done <- seen
		}()
		tick := time.NewTicker(watchPoll)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if side == nil {
				var err error
				if side, err = pgx.ConnectConfig(ctx, cfg); err != nil {
					return // no session to spare (max_connections, say): the caller names the holders
				}
			}
			if b := blockers(ctx, side, pid); len(b) > 0 {
				seen = b
			} else if side.IsClosed() { // ended under it (terminated, a network blip): another at the next read
				side = nil
			}
		}
	}()
	var once sync.Once
	var seen []string
	return func() []string {
		once.Do(func() {
			cancel()
			seen = <-done
		})
		return seen
	}
}

// watchPoll is how often Watch reads who blocks a wait: a few times in
// each try of TryWait, and never for a command whose locks come within it.
const watchPoll = 25 * time.Millisecond

// Blamed names, for an error, the sessions seen blocking a command's lock
// waits (Watch): "sessions blocking its lock waits: pid 12 (role app)";
// when none was seen, those that holders names (Holders), after what
// ("sessions holding locks on them"), or "none seen". Never a query or a
// value: a process id and a role.
func Blamed(blocking []string, what string, holders func() []string) string {
	if len(blocking) > 0 {
		return "sessions blocking its lock waits: " + strings.Join(blocking, ", ")
	}
	return what + ": " + Named(holders())
}
