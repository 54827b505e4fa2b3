package schema

// MigrateWith lets the external tests apply a stand-in migration beside
// the real ones (TestMigrateBesideAppLocks).
var MigrateWith = migrateWith
