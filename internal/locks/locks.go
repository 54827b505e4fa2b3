// Package locks names recalc's locks. Every lock id is a typed constant, so
// two parts of the engine can never pick the same one by accident. The
// schema lock is a PostgreSQL advisory lock under a namespace key of its own
// while recalc.engine_lock does not exist (`recalc init` locks that table
// once it does: schema.lockSchema); the others are row locks on
// recalc.engine_lock (migration 015), which only the schema's owner can
// take: no other role that can connect can hold them to stall recalc, as it
// could an advisory lock.
package locks

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Scope is what an advisory lock protects.
type Scope int32

// Lock scopes.
const (
	// Schema serializes migrations (recalc init).
	Schema Scope = 1
	// Model serializes writers of the stored model and of the materialized
	// tables: imports and recalculations never interleave.
	Model Scope = 2
	// Staging serializes building a full job's staging indexes.
	Staging Scope = 3
	// Effects orders an import with shares or team entries after the
	// writes to attached tables that mark an effect (an owner change, a row
	// gone): their captures hold it shared until they commit (migration
	// 072), and the import takes it before its last absorb.
	Effects Scope = 4
	// Deferral orders a job's chunks with `recalc defer`: each chunk
	// transaction holds it shared (XactShare) from before it reads the
	// deferral until it commits, and the deferral, once committed, takes it
	// (XactLock) to wait for the chunks that read none (migration 081).
	Deferral Scope = 5
)

// namespace is the first key of the schema's advisory lock ("rc" in ASCII).
const namespace = 0x7263

func (s Scope) String() string {
	switch s {
	case Schema:
		return "schema"
	case Model:
		return "model"
	case Staging:
		return "staging"
	case Effects:
		return "effects"
	case Deferral:
		return "deferral"
	}
	return fmt.Sprintf("scope(%d)", int32(s))
}

// XactLock waits for the scope's lock, held until tx ends.
func XactLock(ctx context.Context, tx pgx.Tx, s Scope) error {
	if s == Schema {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, int32(namespace), int32(s)); err != nil {
			return fmt.Errorf("take %s lock: %w", s, err)
		}
		return nil
	}
	return rowLock(ctx, tx, s, `SELECT FROM recalc.engine_lock WHERE scope = $1 FOR UPDATE`)
}

// XactShare waits for the scope's lock in a shared mode (FOR KEY SHARE),
// held until tx ends: holders of it do not wait for each other, only for
// XactLock's, and it for them. Not for Schema.
func XactShare(ctx context.Context, tx pgx.Tx, s Scope) error {
	return rowLock(ctx, tx, s, `SELECT FROM recalc.engine_lock WHERE scope = $1 FOR KEY SHARE`)
}

// rowLock runs sql, which locks s's row of recalc.engine_lock.
func rowLock(ctx context.Context, tx pgx.Tx, s Scope, sql string) error {
	tag, err := tx.Exec(ctx, sql, int32(s))
	if err != nil {
		return fmt.Errorf("take %s lock: %w", s, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("take %s lock: recalc.engine_lock has no row for it: run `recalc init`", s)
	}
	return nil
}
