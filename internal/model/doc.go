// Package model parses and validates the org sharing model: objects and their
// org-wide defaults, roles, users, groups, territories, records, sharing rules,
// manual and programmatic shares, and teams.
//
// It is pure Go with no database, so it can be fuzzed and used by the test
// oracle. The file format is described in docs/model.md and the semantics in
// docs/semantics.md.
//
// Model files are untrusted input. Decode streams the three large sections
// (records, shares, teams) entry by entry to a Sink, so a million-record file
// is never held in memory, and collects the small configuration sections into
// a Config. Validation is split to match: Config.Validate checks every rule
// that involves only configuration, Check* functions check one large-section
// entry's own shape, and Model.Validate checks a whole in-memory model,
// references between records, shares and teams included.
//
// An untrusted file is read with DecodeLimited and its configuration checked
// with Config.ValidateLimited, which bound every input's size and cost by
// Limits (sizes, lengths, conditions, counts, hierarchy depths) before it is
// buffered or walked; validation takes time linear in the configuration.
// Decode and Validate apply no limits, for input that passed them already.
package model
