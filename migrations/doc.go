// Package migrations embeds txmsg's SQL schema and applies it with
// golang-migrate (github.com/golang-migrate/migrate/v4: the iofs source over
// the embedded files, the MySQL database driver).
//
// The files are golang-migrate's NNNN_name.up.sql / NNNN_name.down.sql, so a
// team that already runs golang-migrate can point it at the same files (FS,
// or a copy of this folder) with x-migrations-table=txmsg_schema_migrations
// and share the version table with `txmsg migrate`. Migrator runs them from
// a DSN; it sets multiStatements on its own pool, as golang-migrate runs each
// file in one call. Up is idempotent. A version table written by txmsg before
// it used golang-migrate is converted on the first run.
//
// The schema works on MySQL 8.0.1+ and MariaDB 10.6+ (it needs SKIP LOCKED).
// DDL commits implicitly in MySQL, so a migration that fails half way leaves
// its version marked dirty; Up and Down refuse to run until an operator has
// repaired the schema and called Force. Check tells a daemon whether the
// schema is current.
package migrations
