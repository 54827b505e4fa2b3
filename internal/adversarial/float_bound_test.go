package adversarial

import "testing"

// TestRootFixingKeepsANumberNearFloat64Max: root fixing that falls back to
// the rows recalc.record's constraints allow (beside a legacy row that
// breaks them, as TestLegacyRowDoesNotStopRootFixing) must allow what the
// constraint allows. Since migration 070 a number that rounds to the
// largest float64 (1.7976931348623158e308) is valid, as a model file's is;
// the fallback's own copy of the bound (changes.validRecord) left such a
// record without a family root, so without access, its owner's included.
func TestRootFixingKeepsANumberNearFloat64Max(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exec(t, b.admin, `ALTER TABLE recalc.record DROP CONSTRAINT record_fields_scalar`)
	exec(t, b.admin, `INSERT INTO recalc.record (id, object, owner, parent, fields) VALUES ('k9', 'contact', 'u1', 'a9', '{"a": {"b": 1}}')`)
	exec(t, b.admin, `ALTER TABLE recalc.record ADD CONSTRAINT record_fields_scalar CHECK (
        jsonb_typeof(fields) = 'object'
        AND NOT jsonb_path_exists(fields, 'strict $.* ? (@.type() == "object" || @.type() == "array"
            || (@.type() == "number" && (@ >= 179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792
                || @ <= -179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792)))')
        AND octet_length(fields::text) <= 1048576) NOT VALID`) // as migration 070 has it
	b.run(t)
	exec(t, b.writer, `INSERT INTO recalc.record (id, object, owner, fields) VALUES ('a9', 'account', 'u2', '{"priority": 1.7976931348623158e308}')`)
	b.run(t)
	b.wantAccess(t, map[string]string{"u2 a9": "all", "u4 a9": "read", "u1 a9": "none", "u1 k9": "none", "u2 k9": "none"})
}
