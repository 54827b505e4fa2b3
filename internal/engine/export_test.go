package engine

// MaxJoins is maxJoins, for the tests.
const MaxJoins = maxJoins
