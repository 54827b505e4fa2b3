package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/model"
)

// Options changes how an import applies its file.
type Options struct {
	// Merge applies the file entry by entry (`recalc import --merge`):
	// each entry replaces the stored entry with the same key, the file's
	// "delete" section removes entries, and everything else is kept.
	Merge bool
	// IfRevision, when set, refuses the import unless the stored
	// configuration is at that revision (see Revision). A file's own
	// "revision" is checked the same way.
	IfRevision string
	// LockTimeout bounds each wait, once the import holds the model lock,
	// for a lock another transaction holds: a record, a share or a team
	// entry that an application transaction keeps locked, or wrote and has
	// not committed (0: DefaultLockTimeout). Past it the import fails with
	// a LockedError, stores nothing and releases the model lock, which
	// `recalc run` and `recalc watch` wait for.
	LockTimeout time.Duration
}

// lockTimeout is LockTimeout, or DefaultLockTimeout when unset.
func (o Options) lockTimeout() time.Duration {
	if o.LockTimeout > 0 {
		return o.LockTimeout
	}
	return DefaultLockTimeout
}

// StaleError is an import refused because the stored configuration changed
// since the revision the file (or --if-revision) names. Nothing was stored.
type StaleError struct {
	Want, Stored string
	Flag         bool // the revision came from --if-revision, not from the file
}

func (e *StaleError) Error() string {
	from := fmt.Sprintf("the file was exported at revision %s", e.Want)
	undo := `, or remove "revision" from the file to import it anyway`
	if e.Flag {
		from, undo = fmt.Sprintf("--if-revision is %s", e.Want), ""
	}
	return fmt.Sprintf("the stored configuration changed: %s but it is now at %s. Nothing was stored: run `recalc export` again, redo the edit on that file and import it%s",
		from, e.Stored, undo)
}

// checkRevision refuses the import when the file's revision or the
// option's is not the stored configuration's, before anything is changed.
func checkRevision(ctx context.Context, tx pgx.Tx, file, flag string) error {
	if file == "" && flag == "" {
		return nil
	}
	rev, err := Revision(ctx, tx)
	if err != nil {
		return err
	}
	if flag != "" && flag != rev {
		return &StaleError{Want: flag, Stored: rev, Flag: true}
	}
	if file != "" && file != rev {
		return &StaleError{Want: file, Stored: rev}
	}
	return nil
}

// Staging kinds of a merge file's "delete" section.
const (
	stageDelRecord stageKind = 4 // record: the id of a record to delete
	stageDelShare  stageKind = 5 // record, grantee, cause: a share to delete
	stageDelTeam   stageKind = 6 // record, user_id: a team entry to delete
)

// deleteSink stages the records, shares and team entries a merge file
// deletes.
func deleteSink(sink *model.Sink, yield func([]any) error) {
	sink.Merge = true
	sink.DeleteRecord = func(id *string) error {
		return yield([]any{stageDelRecord, *id, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil})
	}
	sink.DeleteShare = func(s *model.Share) error {
		return yield([]any{stageDelShare, s.Record, nil, nil, nil, nil, nil, s.Grantee.String(), s.Cause, nil, nil, nil, nil, nil, nil})
	}
	sink.DeleteTeam = func(t *model.Team) error {
		return yield([]any{stageDelTeam, t.Record, nil, nil, nil, nil, nil, nil, nil, t.User, nil, nil, nil, nil, nil})
	}
}

// mergeFileConfig turns a merge file's configuration sections and
// deletions into whole sections: the stored ones with the file's entries
// replaced, added and deleted. The import then stores them as if the file
// had sent them whole.
func mergeFileConfig(ctx context.Context, tx pgx.Tx, f *model.File) error {
	var doc bytes.Buffer
	doc.WriteByte('{')
	for _, sec := range model.ConfigSections {
		raw, inFile := f.Raw[sec]
		del, inDelete := f.Delete[sec]
		if !inFile && !inDelete {
			continue
		}
		stored, err := storedSection(ctx, tx, sec)
		if err != nil {
			return err
		}
		merged, err := model.MergeSection(sec, stored, raw, del)
		if err != nil {
			return &InvalidError{err}
		}
		f.Raw[sec] = merged
		if doc.Len() > 1 {
			doc.WriteByte(',')
		}
		name, _ := json.Marshal(sec)
		doc.Write(name)
		doc.WriteByte(':')
		doc.Write(merged)
	}
	doc.WriteByte('}')
	cfg, err := model.DecodeConfig(doc.Bytes())
	if err != nil {
		return &InvalidError{err}
	}
	f.Config.Overlay(cfg, cfg)
	return nil
}

// has reports whether the merge file names section sec, as entries or
// deletions.
func has(f *model.File, sec string, inFile bool) bool {
	_, del := f.Delete[sec]
	return inFile || del
}

// applyMerge applies a merge file's records, shares and team entries, and
// their deletions, entry by entry.
//
// The shares and team entries the file names are checked against those
// stored before its records are applied: a record it deletes takes its
// shares and team entries with it, and one whose owner changes its manual
// shares, which the file may delete too.
func applyMerge(ctx context.Context, tx pgx.Tx, f *model.File, res *Result) error {
	records, shares, teams := has(f, "records", f.HasRecords), has(f, "shares", f.HasShares), has(f, "teams", f.HasTeams)
	if shares {
		if err := checkShareKeys(ctx, tx); err != nil {
			return err
		}
	}
	if teams {
		if err := checkTeamKeys(ctx, tx); err != nil {
			return err
		}
	}
	if records {
		if err := mergeRecordsByID(ctx, tx, res); err != nil {
			return err
		}
	}
	if shares {
		if err := mergeSharesByKey(ctx, tx); err != nil {
			return err
		}
	}
	if records {
		if err := wipeManualShares(ctx, tx, res); err != nil {
			return err
		}
	}
	if teams {
		return mergeTeamsByKey(ctx, tx)
	}
	return nil
}

// checkDeletes fails on the first entry of kind del that is not stored
// (notStored selects its key), or that is also staged as kind put.
func checkDeletes(ctx context.Context, tx pgx.Tx, what string, del, put stageKind, keys, notStored string) error {
	if err := dupCheck(ctx, tx, "delete."+what+": %s%s is listed twice",
		`SELECT `+keys+`, '' FROM stage d WHERE kind = $1 GROUP BY 1 HAVING count(*) > 1 LIMIT 1`, del); err != nil {
		return err
	}
	if err := dupCheck(ctx, tx, "delete."+what+": %s is not stored%s: check the key (recalc export lists them)",
		`SELECT `+keys+`, '' FROM stage d WHERE kind = $1 AND NOT EXISTS (`+notStored+`) LIMIT 1`, del); err != nil {
		return err
	}
	return dupCheck(ctx, tx, "%s is both in section "+what+" and in delete."+what+"%s: keep one",
		`SELECT `+keys+`, '' FROM stage d WHERE kind = $1 AND EXISTS (
			SELECT 1 FROM stage n WHERE n.kind = $2 AND n.record = d.record
			  AND n.grantee IS NOT DISTINCT FROM d.grantee AND n.cause IS NOT DISTINCT FROM d.cause
			  AND n.user_id IS NOT DISTINCT FROM d.user_id) LIMIT 1`, del, put)
}

// mergeRecordsByID upserts the staged records by id and deletes the listed
// ones. Like the application's own SQL, it leaves family roots to the next
// run (changes.FixRoots): a record's new parent may be a stored record.
func mergeRecordsByID(ctx context.Context, tx pgx.Tx, res *Result) error {
	const step = "merge records"
	if err := dupCheck(ctx, tx, "record %q is defined twice%s",
		`SELECT record, '' FROM stage WHERE kind = $1 GROUP BY record HAVING count(*) > 1 LIMIT 1`, stageRecord); err != nil {
		return err
	}
	if err := checkDeletes(ctx, tx, "records", stageDelRecord, stageRecord, `format('record %s', to_json(d.record))`,
		`SELECT 1 FROM recalc.record r WHERE r.id = d.record`); err != nil {
		return err
	}
	if err := checkAttached(ctx, tx, stageRecord, stageDelRecord); err != nil {
		return err
	}
	if err := exec(ctx, tx, step, nil, `
		CREATE TEMP TABLE staged_record ON COMMIT DROP AS
		SELECT n.record AS id, n.object, n.owner, nullif(n.parent, '') AS parent, r.root_id, n.fields, n.territories
		FROM stage n LEFT JOIN recalc.record r ON r.id = n.record WHERE n.kind = $1`, stageRecord); err != nil {
		return err
	}
	if err := noteWiped(ctx, tx); err != nil {
		return err
	}
	// A record whose object changes keeps its shares and team entries, as
	// in a whole import: checkRefs then refuses those that no longer
	// resolve, and a team entry stays on a record of another object.
	if err := keepMovedReferences(ctx, tx); err != nil {
		return err
	}
	if err := exec(ctx, tx, step, &res.Changes, `DELETE FROM recalc.record r USING stage d WHERE d.kind = $1 AND r.id = d.record`, stageDelRecord); err != nil {
		return err
	}
	for _, sql := range []string{
		`UPDATE recalc.record r SET object = n.object, owner = n.owner, parent = n.parent,
		        fields = n.fields, territories = n.territories
		 FROM staged_record n WHERE n.id = r.id
		   AND (r.object, r.owner, r.parent, r.fields, r.territories)
		       IS DISTINCT FROM (n.object, n.owner, n.parent, n.fields, n.territories)`,
		`INSERT INTO recalc.record (id, object, owner, parent, fields, territories)
		 SELECT n.id, n.object, n.owner, n.parent, n.fields, n.territories FROM staged_record n
		 WHERE NOT EXISTS (SELECT 1 FROM recalc.record r WHERE r.id = n.id)`,
	} {
		if err := exec(ctx, tx, step, &res.Changes, sql); err != nil {
			return err
		}
	}
	if err := restoreReferences(ctx, tx, true, true); err != nil {
		return err
	}
	// A deleted record must not be left as the parent of a kept one.
	return dupCheck(ctx, tx, "record %q is deleted but record %q still names it as parent: delete that record too, or give it another parent, in the same file",
		`SELECT c.parent, c.id FROM recalc.record c WHERE c.parent IN (SELECT record FROM stage WHERE kind = $1) LIMIT 1`, stageDelRecord)
}

// checkShareKeys refuses a share the file lists twice, and one its delete
// section names that is not stored, or lists too.
func checkShareKeys(ctx context.Context, tx pgx.Tx) error {
	if err := dupCheck(ctx, tx, "share on record %q for %s is listed twice", `SELECT record, to_json(grantee) || ' with cause ' || to_json(cause) FROM stage
		WHERE kind = $1 GROUP BY record, grantee, cause HAVING count(*) > 1 LIMIT 1`, stageShare); err != nil {
		return err
	}
	return checkDeletes(ctx, tx, "shares", stageDelShare, stageShare,
		`format('share on record %s for %s with cause %s', to_json(d.record), to_json(d.grantee), to_json(d.cause))`,
		`SELECT 1 FROM recalc.share_input s WHERE (s.record, s.grantee, s.cause) = (d.record, d.grantee, d.cause)`)
}

// mergeSharesByKey upserts the staged shares by (record, grantee, cause),
// deletes the listed ones and logs the records whose shares changed.
func mergeSharesByKey(ctx context.Context, tx pgx.Tx) error {
	const step = "merge shares"
	if err := exec(ctx, tx, step, nil, `
		INSERT INTO recalc.change (kind, keys, rooted) -- shares move no family root
		SELECT 'record', array_agg(DISTINCT n.record), true
		FROM stage n LEFT JOIN recalc.share_input s ON (s.record, s.grantee, s.cause) = (n.record, n.grantee, n.cause)
		WHERE n.kind = $2 OR n.kind = $1 AND (s.record IS NULL OR (s.object, s.access) IS DISTINCT FROM (n.object, n.access))
		HAVING count(*) > 0`, stageShare, stageDelShare); err != nil {
		return err
	}
	if err := exec(ctx, tx, step, nil, `DELETE FROM recalc.share_input s USING stage n
		WHERE n.kind IN ($1, $2) AND (s.record, s.grantee, s.cause) = (n.record, n.grantee, n.cause)`, stageShare, stageDelShare); err != nil {
		return err
	}
	return exec(ctx, tx, step, nil, `INSERT INTO recalc.share_input (record, object, grantee, access, cause)
		SELECT record, object, grantee, access, cause FROM stage WHERE kind = $1`, stageShare)
}

// checkTeamKeys refuses a team entry the file lists twice, and one its
// delete section names that is not stored, or lists too.
func checkTeamKeys(ctx context.Context, tx pgx.Tx) error {
	if err := dupCheck(ctx, tx, "team entry on record %q for user %q is listed twice",
		`SELECT record, user_id FROM stage WHERE kind = $1 GROUP BY record, user_id HAVING count(*) > 1 LIMIT 1`, stageTeam); err != nil {
		return err
	}
	return checkDeletes(ctx, tx, "teams", stageDelTeam, stageTeam,
		`format('team entry on record %s for user %s', to_json(d.record), to_json(d.user_id))`,
		`SELECT 1 FROM recalc.team t WHERE (t.record, t.user_id) = (d.record, d.user_id)`)
}

// mergeTeamsByKey upserts the staged team entries by (record, user),
// deletes the listed ones and logs the records whose team changed.
func mergeTeamsByKey(ctx context.Context, tx pgx.Tx) error {
	const step = "merge teams"
	if err := exec(ctx, tx, step, nil, `
		INSERT INTO recalc.change (kind, keys, rooted) -- team entries move no family root
		SELECT 'record', array_agg(DISTINCT n.record), true
		FROM stage n LEFT JOIN recalc.team t ON (t.record, t.user_id) = (n.record, n.user_id)
		WHERE n.kind = $2 OR n.kind = $1 AND (t.record IS NULL
		   OR (t.access, t.contact_access, t.opportunity_access, t.case_access)
		      IS DISTINCT FROM (n.access, n.contact_access, n.opportunity_access, n.case_access))
		HAVING count(*) > 0`, stageTeam, stageDelTeam); err != nil {
		return err
	}
	if err := exec(ctx, tx, step, nil, `DELETE FROM recalc.team t USING stage n
		WHERE n.kind IN ($1, $2) AND (t.record, t.user_id) = (n.record, n.user_id)`, stageTeam, stageDelTeam); err != nil {
		return err
	}
	return exec(ctx, tx, step, nil, `INSERT INTO recalc.team (record, user_id, access, contact_access, opportunity_access, case_access)
		SELECT record, user_id, access, contact_access, opportunity_access, case_access FROM stage WHERE kind = $1`, stageTeam)
}
