// Package store imports model files into the stored model: configuration
// sections as JSON, records, shares and teams as rows. An import is one
// transaction: the file is streamed into a staging table with COPY, merged
// section by section, and every reference is checked before commit, so an
// invalid file leaves the database exactly as it was. It recalculates
// nothing; it logs what changed in recalc.change for the next run.
package store
