package migrations

// NewFromFS returns a Migrator that runs the migrations in fsys.
var NewFromFS = newMigrator
