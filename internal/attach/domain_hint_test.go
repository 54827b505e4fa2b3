package attach_test

import (
	"strings"
	"testing"
)

// TestDomainRefusalSaysItsBaseType: a field of a domain is refused, and
// the error says what to do. For a domain over a type recalc reads
// (through domains over domains), that is a view casting the column to
// that type: the hint used to say ::text for every domain, which would
// turn a number, a boolean or a timestamp into a string that conditions
// compare as text (amount ge 1000 false, "10" lt "9", vip equals true
// never). A domain over a type recalc cannot read, an enum or citext keep
// the ::text hint.
func TestDomainRefusalSaysItsBaseType(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, b.app,
		`CREATE DOMAIN crm.dh_amount AS numeric(12, 2) CHECK (VALUE >= 0)`,
		`CREATE DOMAIN crm.dh_flag AS boolean`,
		`CREATE DOMAIN crm.dh_at AS timestamptz`,
		`CREATE DOMAIN crm.dh_day AS date`,
		`CREATE DOMAIN crm.dh_due AS crm.dh_day`,
		`CREATE DOMAIN crm.dh_code AS varchar(10)`,
		`CREATE DOMAIN crm.dh_span AS interval`,
		`CREATE TYPE crm.dh_mood AS ENUM ('ok')`,
		`CREATE TABLE crm.dh (id bigint PRIMARY KEY, owner_id text, amount crm.dh_amount, vip crm.dh_flag, at crm.dh_at,
			due crm.dh_due, code crm.dh_code, span crm.dh_span, mood crm.dh_mood)`,
		`GRANT SELECT, TRIGGER ON crm.dh TO `+ident(b.engineRole))
	for col, want := range map[string]string{
		"amount": `it is a domain over numeric: attach a view over crm.dh that casts the column to it, such as "amount"::numeric AS "amount"`,
		"vip":    `it is a domain over boolean: attach a view over crm.dh that casts the column to it, such as "vip"::bool AS "vip"`,
		"at":     `such as "at"::timestamptz AS "at"`,
		"due":    `it is a domain over date: attach a view over crm.dh that casts the column to it, such as "due"::date AS "due"`,
		"code":   `such as "code"::varchar AS "code"`,
		"span":   `such as "span"::text AS "span"`,
		"mood":   `such as "mood"::text AS "mood"`,
	} {
		t.Run(col, func(t *testing.T) {
			_, err := b.attach(t, `{"objects": [{"object": "account", "table": "crm.dh", "id": "id", "owner": "owner_id", "fields": ["`+col+`"]}]}`)
			if err == nil || !strings.Contains(err.Error(), "which recalc cannot read") || !strings.Contains(err.Error(), want) {
				t.Fatalf("attaching field %s: %v, want refused saying %q", col, err, want)
			}
		})
	}
}
