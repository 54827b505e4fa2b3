package model

import (
	"fmt"
	"strings"
)

// Level is an access level. The order matters: a higher level includes the lower ones.
type Level uint8

// Access levels, ordered.
const (
	None Level = iota
	Read
	Edit
	All
)

var levelNames = [...]string{"none", "read", "edit", "all"}

func (l Level) String() string { return enumName(levelNames[:], l, "level") }

// MarshalText writes the level's name, so levels read well in JSON.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// ParseLevel parses none, read, edit or all.
func ParseLevel(s string) (Level, bool) { return parseEnum[Level](levelNames[:], s) }

// enumName is the name of v among names, or kind(v) when it has none.
func enumName[T ~uint8](names []string, v T, kind string) string {
	if int(v) < len(names) {
		return names[v]
	}
	return fmt.Sprintf("%s(%d)", kind, uint8(v))
}

// parseEnum returns the value named s among names, false when none is.
func parseEnum[T ~uint8](names []string, s string) (T, bool) {
	for i, n := range names {
		if s == n {
			return T(i), true
		}
	}
	return 0, false
}

// OWD is an organisation-wide default.
type OWD uint8

// Organisation-wide defaults, ordered from closed to open; ControlledByParent is apart.
const (
	Private OWD = iota
	PublicReadOnly
	PublicReadWrite
	ControlledByParent
)

var owdNames = [...]string{"private", "public_read_only", "public_read_write", "controlled_by_parent"}

func (o OWD) String() string { return enumName(owdNames[:], o, "owd") }

// Level is the access an OWD gives by itself (None for ControlledByParent).
func (o OWD) Level() Level {
	switch o {
	case PublicReadOnly:
		return Read
	case PublicReadWrite:
		return Edit
	}
	return None
}

// ParseOWD parses an OWD name.
func ParseOWD(s string) (OWD, bool) { return parseEnum[OWD](owdNames[:], s) }

// Standard object names; a custom object's name ends in "__c".
const (
	Account     = "account"
	Contact     = "contact"
	Opportunity = "opportunity"
	Case        = "case"
	Lead        = "lead"
)

// IsStandard reports whether name is one of Salesforce's standard objects.
func IsStandard(name string) bool {
	switch name {
	case Account, Contact, Opportunity, Case, Lead:
		return true
	}
	return false
}

// IsAccountChild reports whether records of the object get implicit child
// access from, and give implicit parent access to, their account.
func IsAccountChild(name string) bool {
	return name == Contact || name == Opportunity || name == Case
}

// ChildAccess is the access given on the contacts, opportunities and cases
// of an account (roles, account rules, account teams and territories carry one).
type ChildAccess struct {
	Contact, Opportunity, Case Level
}

// For returns the level for a child object name (None for other objects).
func (c ChildAccess) For(object string) Level {
	switch object {
	case Contact:
		return c.Contact
	case Opportunity:
		return c.Opportunity
	case Case:
		return c.Case
	}
	return None
}

// IsZero reports whether no child access is set.
func (c ChildAccess) IsZero() bool { return c == ChildAccess{} }

// Object is a record type with its sharing settings.
type Object struct {
	Name        string
	Parent      string
	InternalOWD OWD
	ExternalOWD OWD
	Hierarchy   bool // Grant Access Using Hierarchies
}

// CBP reports whether the object is controlled by its parent.
func (o *Object) CBP() bool { return o.InternalOWD == ControlledByParent }

// Role is a node of the role hierarchy.
type Role struct {
	ID     string
	Parent string
	Child  ChildAccess // what the role's users get on children of accounts they own
}

// User is a person who may receive access.
type User struct {
	ID       string
	Role     string
	External bool
	Active   bool
}

// GranteeKind says what set of users a grantee names.
type GranteeKind uint8

// Grantee kinds.
const (
	GUser GranteeKind = iota
	GGroup
	GRole
	GRoleAndSubordinates
	GRoleAndInternalSubordinates
	GAllInternalUsers
	GTerritory // internal: the receivers of a territory; not valid in model files
)

var granteePrefixes = [...]string{"user", "group", "role", "role_and_subordinates", "role_and_internal_subordinates", "all_internal_users", "territory"}

// Grantee names a set of users: a user, a group, a role-based set or all internal users.
type Grantee struct {
	Kind GranteeKind
	ID   string // empty for GAllInternalUsers
}

func (g Grantee) String() string {
	if g.Kind == GAllInternalUsers {
		return "all_internal_users"
	}
	return granteePrefixes[g.Kind] + ":" + g.ID
}

// ParseGrantee parses the grantee syntax of model files ("user:ID", "group:ID",
// "role:ID", "role_and_subordinates:ID", "role_and_internal_subordinates:ID",
// "all_internal_users"). It also accepts "territory:ID", the engine's own
// notation, only when internal is true.
func ParseGrantee(s string, internal bool) (Grantee, error) {
	if s == "all_internal_users" {
		return Grantee{Kind: GAllInternalUsers}, nil
	}
	prefix, id, ok := strings.Cut(s, ":")
	if ok && id != "" {
		for k, p := range granteePrefixes {
			if p == prefix && (GranteeKind(k) != GAllInternalUsers) && (GranteeKind(k) != GTerritory || internal) {
				return Grantee{Kind: GranteeKind(k), ID: id}, nil
			}
		}
	}
	return Grantee{}, fmt.Errorf("grantee %q is not user:ID, group:ID, role:ID, role_and_subordinates:ID, role_and_internal_subordinates:ID or all_internal_users", s)
}

// Group is a public group or a queue.
type Group struct {
	ID            string
	Members       []Grantee
	IncludeBosses bool
	Queue         bool
}

// Territory is a node of the territory hierarchy.
type Territory struct {
	ID            string
	Parent        string
	Users         []string
	AccountAccess Level
	Child         ChildAccess
}

// Record is one CRM record.
type Record struct {
	Object      string
	ID          string
	Owner       string
	Parent      string
	Fields      Fields
	Territories []string
}

// RuleType is owner-based or criteria-based.
type RuleType uint8

// Rule types.
const (
	OwnerRule RuleType = iota
	CriteriaRule
)

// Rule is a sharing rule.
type Rule struct {
	ID       string
	Object   string
	Type     RuleType
	Source   Grantee // owner rules
	Criteria *Criteria
	Target   Grantee
	Access   Level
	Child    ChildAccess // account rules only
}

// Share is a manual or programmatic (apex) share, an input the engine never recalculates away.
type Share struct {
	Object  string
	Record  string
	Grantee Grantee
	Access  Level
	Cause   string // CauseManual, or CauseApex followed by the Apex sharing reason's name
}

// Causes of input shares.
const (
	CauseManual = "manual" // shared by a user, wiped when the record's owner changes
	CauseApex   = "apex:"  // the prefix of a programmatic share's cause: "apex:NAME"
)

// Team is an account, opportunity or case team entry.
type Team struct {
	Record string
	User   string
	Access Level
	Child  ChildAccess
	// ChildGiven is set when the entry named a child access, even none:
	// only an account's team entries may.
	ChildGiven bool
}

// Config holds the small configuration sections of a model. A nil slice means
// the section was absent from the file; an empty non-nil slice means it was
// present and empty.
type Config struct {
	Objects     []Object
	Roles       []Role
	Users       []User
	Groups      []Group
	Territories []Territory
	Rules       []Rule
}

// Overlay replaces each section of c that present has (a non-nil one) with
// src's. An import overlays a file on the stored configuration with present
// and src both the file's.
func (c *Config) Overlay(src, present *Config) {
	if present.Objects != nil {
		c.Objects = src.Objects
	}
	if present.Roles != nil {
		c.Roles = src.Roles
	}
	if present.Users != nil {
		c.Users = src.Users
	}
	if present.Groups != nil {
		c.Groups = src.Groups
	}
	if present.Territories != nil {
		c.Territories = src.Territories
	}
	if present.Rules != nil {
		c.Rules = src.Rules
	}
}

// Model is a whole org model in memory: configuration plus data.
type Model struct {
	Config
	Records []Record
	Shares  []Share
	Teams   []Team
}
