package attach

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/recalc-dev/recalc/internal/model"
	"github.com/recalc-dev/recalc/internal/pg"
)

// modelObjects reads the stored model's objects: name to parent object
// ("" when none).
func modelObjects(ctx context.Context, tx pgx.Tx) (map[string]string, error) {
	rows, err := tx.Query(ctx, `
		SELECT o->>'name', coalesce(o->>'parent', '')
		FROM recalc.model_section s, jsonb_array_elements(s.doc) o WHERE s.name = 'objects'`)
	if err != nil {
		return nil, fmt.Errorf("read stored objects: %w", err)
	}
	objs := map[string]string{}
	var name, parent string
	_, err = pgx.ForEachRow(rows, []any{&name, &parent}, func() error { objs[name] = parent; return nil })
	if err != nil {
		return nil, fmt.Errorf("read stored objects: %w", err)
	}
	return objs, nil
}

// resolve checks an entry against the stored model and the catalog.
// attached holds every object the spec attaches.
func resolve(ctx context.Context, tx pgx.Tx, o Object, objs map[string]string, attached map[string]bool) (*target, error) {
	parent, ok := objs[o.Object]
	if !ok && o.Object != model.UsersAttachment {
		return nil, fmt.Errorf("object %q is not in the stored model: import a model that defines it first (`recalc import`)", o.Object)
	}
	t := &target{Object: o, parentObject: parent}
	switch {
	case parent == "" && o.Parent != nil:
		return nil, fmt.Errorf("object %q has no parent object in the model: remove its \"parent\" column", o.Object)
	case parent != "" && o.Parent == nil:
		return nil, fmt.Errorf("object %q has parent object %q in the model: give the column holding the parent's id as \"parent\"", o.Object, parent)
	case parent != "" && !attached[parent]:
		return nil, fmt.Errorf("object %q has parent object %q, which the spec does not attach: attach %q too", o.Object, parent, parent)
	case o.Territories != nil && o.Object != "account":
		return nil, fmt.Errorf("object %q cannot have territories: only accounts may (docs/model.md)", o.Object)
	}
	rel, err := readRelation(ctx, tx, o.Table)
	if err != nil {
		return nil, err
	}
	if rel == nil {
		return nil, fmt.Errorf("table %s does not exist (or is not visible to this role)%s", o.Table, pg.NearTable(ctx, tx, o.Table))
	}
	t.source, t.relid, t.rel = rel.source, rel.relid, rel
	if !rel.canSelect {
		return nil, fmt.Errorf("this role cannot read %s: GRANT SELECT ON %s TO the role running recalc", o.Table, rel.source)
	}
	cols, err := t.readColumns(rel)
	if err != nil {
		return nil, err
	}
	switch rel.kind {
	case "r":
		err = t.resolveTable(ctx, tx, rel, cols)
	case "p":
		err = fmt.Errorf("%s is a partitioned table, whose partitions' writes its triggers do not see: attach a view over plain tables instead", o.Table)
	case "v":
		err = t.resolveView(ctx, tx, rel)
	default:
		err = fmt.Errorf("%s is neither a table nor a view", o.Table)
	}
	if err != nil {
		return nil, err
	}
	return t, t.setFingerprint()
}

// resolveUsers checks the users' type and active columns, which
// readColumns read as fields, and records which is which.
func (t *target) resolveUsers(u *Users) error {
	for _, c := range []struct {
		what  string
		col   *string
		types []string
	}{{"type", u.Type, []string{"text", "varchar"}}, {"active", u.Active, []string{"bool"}}} {
		if c.col == nil {
			continue
		}
		if _, err := t.rel.column(t.Table, c.what, *c.col, c.types); err != nil {
			return err
		}
	}
	t.users = u
	return t.setFingerprint()
}

// readColumns checks the id, owner, parent, fields and territories columns
// and returns them with their types, in that order.
func (t *target) readColumns(rel *relation) (cols []string, err error) {
	keys := []string{"text", "varchar", "bpchar", "int8", "int4", "uuid"}
	id, err := rel.column(t.Table, "id", t.ID, keys)
	if err != nil {
		return nil, err
	}
	t.idType = keyTypes[id.name]
	cols = append(cols, t.ID)
	ownerWhat, fieldWhat := "owner", "field"
	if t.Object.Object == model.UsersAttachment {
		ownerWhat, fieldWhat = "role", "type or active"
	}
	owner, err := rel.column(t.Table, ownerWhat, t.Owner, keys)
	if err != nil {
		return nil, err
	}
	if err := deterministic(t.Table, "id", t.ID, id); err != nil {
		return nil, err
	}
	if err := deterministic(t.Table, ownerWhat, t.Owner, owner); err != nil {
		return nil, err
	}
	cols = append(cols, t.Owner)
	if t.Parent != nil {
		parent, err := rel.column(t.Table, "parent", *t.Parent, keys)
		if err != nil {
			return nil, err
		}
		if err := deterministic(t.Table, "parent", *t.Parent, parent); err != nil {
			return nil, err
		}
		cols = append(cols, *t.Parent)
	}
	for _, f := range t.Fields {
		if _, err := rel.column(t.Table, fieldWhat, f, fieldTypes); err != nil {
			return nil, err
		}
	}
	cols = append(cols, t.Fields...)
	if t.Territories != nil {
		if _, err := rel.column(t.Table, "territories", *t.Territories, territoryTypes); err != nil {
			return nil, err
		}
		cols = append(cols, *t.Territories)
	}
	return cols, nil
}

// resolveTable checks an attached table, which captures its own writes.
func (t *target) resolveTable(ctx context.Context, tx pgx.Tx, rel *relation, cols []string) error {
	if len(t.Capture) > 0 {
		return fmt.Errorf("%s is a table, which captures its own writes: remove \"capture\" (it is for views)", t.Table)
	}
	if rel.inherits {
		return fmt.Errorf("%s has inheritance children or a parent (or is a partition): writes addressed to another table of its hierarchy would not be captured; attach a plain table", t.Table)
	}
	if rel.subscribed {
		return fmt.Errorf("%s is written by a subscription of logical replication, whose writes fire no capture trigger: attach it on the publisher", t.Table)
	}
	if !rel.canTrigg {
		return fmt.Errorf("this role cannot add triggers to %s: GRANT TRIGGER ON %s TO the role running recalc", t.Table, rel.source)
	}
	unique, err := uniqueOn(ctx, tx, rel.relid, t.ID)
	if err != nil {
		return err
	}
	if !unique {
		return fmt.Errorf("id column %q of %s is not unique: give it a primary key or a unique index on it alone", t.ID, t.Table)
	}
	c := capture{Relid: rel.relid, Source: rel.source, KeyCol: t.ID, Func: funcName(t.Object.Object, rel.relid), Cols: distinct(cols)}
	for _, col := range c.Cols {
		c.Types = append(c.Types, rel.cols[col].typ)
		c.Colls = append(c.Colls, rel.cols[col].coll)
	}
	t.captures = []capture{c}
	return nil
}

// resolveView checks an attached view and its base tables.
func (t *target) resolveView(ctx context.Context, tx pgx.Tx, rel *relation) error {
	t.isView = true
	if len(t.Capture) == 0 {
		return fmt.Errorf("%s is a view: list its base tables under \"capture\", each with the column holding the view's %q", t.Table, t.ID)
	}
	if !rel.ownedByMe {
		return fmt.Errorf("view %s must be owned by the role running recalc (ALTER VIEW %s OWNER TO it), so that no other role can change what recalc reads with its rights", t.Table, rel.source)
	}
	if rel.invoker {
		return fmt.Errorf("view %s has security_invoker set: recalc reads it as its sandbox role, which may read no table; ALTER VIEW %s RESET (security_invoker), then attach again", t.Table, rel.source)
	}
	reads, err := viewReads(ctx, tx, rel.relid, t.Table)
	if err != nil {
		return err
	}
	idType := rel.cols[t.ID].name
	for _, c := range t.Capture {
		base, err := t.baseTable(ctx, tx, c, idType)
		if err != nil {
			return err
		}
		t.captures = append(t.captures, *base)
	}
	for r, read := range reads {
		i := slices.IndexFunc(t.captures, func(c capture) bool { return c.Relid == r })
		switch {
		case i < 0:
			return fmt.Errorf("view %s reads table %s, which \"capture\" does not list: list every table it reads, or its changes would be missed", t.Table, read.name)
		case read.times > 1 && t.Object.Object != model.UsersAttachment: // the users' source is read whole
			return fmt.Errorf("view %s reads table %s %d times: a write to one of its rows re-reads only the record whose id its column %q holds, "+
				"so a row read for another record (a parent's, say) would leave that record stale: read each row of it for its own record only (docs/attach.md, \"A row counts for one record\")",
				t.Table, read.name, read.times, t.captures[i].KeyCol)
		}
	}
	return nil
}

// baseTable checks one base table of a view.
func (t *target) baseTable(ctx context.Context, tx pgx.Tx, c Capture, idType string) (*capture, error) {
	rel, err := readRelation(ctx, tx, c.Table)
	if err != nil {
		return nil, err
	}
	switch {
	case rel == nil:
		return nil, fmt.Errorf("capture table %s does not exist (or is not visible to this role)%s", c.Table, pg.NearTable(ctx, tx, c.Table))
	case rel.kind != "r":
		return nil, fmt.Errorf("capture table %s is not a plain table (partitioned tables are refused: their partitions' writes are not captured)", c.Table)
	case rel.inherits:
		return nil, fmt.Errorf("capture table %s has inheritance children or a parent (or is a partition): writes addressed to another table of its hierarchy would not be captured", c.Table)
	case rel.subscribed:
		return nil, fmt.Errorf("capture table %s is written by a subscription of logical replication, whose writes fire no capture trigger: attach it on the publisher", c.Table)
	case !rel.canTrigg || !rel.canSelect:
		return nil, fmt.Errorf("this role cannot read or add triggers to %s: GRANT SELECT, TRIGGER ON %s TO the role running recalc", c.Table, rel.source)
	}
	key, ok := rel.cols[c.ID]
	// The users' source is read whole at every absorb, so a base table's
	// capture id column only marks that the table was written: it may be of
	// any id type, as a roles table's is that several users' rows read.
	users := t.Object.Object == model.UsersAttachment
	switch {
	case !ok:
		return nil, fmt.Errorf("capture id column %q does not exist in %s%s", c.ID, c.Table, rel.nearColumn(c.ID))
	case users && !slices.Contains([]string{"text", "varchar", "bpchar", "int8", "int4", "uuid"}, key.name):
		return nil, fmt.Errorf("capture id column %q of %s is of type %s: give a column of type text, varchar, char(n), bigint, integer or uuid (any one: the users' source is read whole at every write)",
			c.ID, c.Table, sqlType(key.name))
	case !users && key.name != idType:
		return nil, fmt.Errorf("capture id column %q of %s is of type %s: it must be of the type of the view's id column %q, %s, "+
			"as the ids it logs are read back as the view's; a cast in the view does not help (the capture reads the table's own column): "+
			"alter one of the two columns so that they share a type (SuiteCRM keys every table char(36)), or leave %s out of the view",
			c.ID, c.Table, sqlType(key.name), t.ID, sqlType(idType), c.Table)
	}
	if err := deterministic(c.Table, "capture id", c.ID, key); err != nil {
		return nil, err
	}
	return &capture{Relid: rel.relid, Source: rel.source, KeyCol: c.ID, Func: funcName(t.Object.Object, rel.relid),
		Cols: []string{c.ID}, Types: []uint32{key.typ}, Colls: []uint32{key.coll}}, nil
}

// deterministic refuses a key column whose collation is nondeterministic:
// ids that differ only in case (or accents) would compare equal.
func deterministic(table, what, col string, c column) error {
	if c.nondet {
		return fmt.Errorf("%s column %q of %s has a nondeterministic collation, under which different ids compare equal: give it a deterministic one (COLLATE \"C\")", what, col, table)
	}
	return nil
}

// distinct returns ss without repeats, in order.
func distinct(ss []string) []string {
	var out []string
	for _, s := range ss {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
