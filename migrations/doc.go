// Package migrations embeds txmsg's SQL schema and applies it.
//
// The files are golang-migrate style (NNNN_name.up.sql / NNNN_name.down.sql),
// so a service that already runs a migration tool can copy them from FS into
// its own tree. Otherwise Migrator applies them and records each applied
// version in the table txmsg_schema_migrations; Up is idempotent.
//
// The schema works on MySQL 8.0.1+ and MariaDB 10.6+ (it needs SKIP LOCKED).
// DDL commits implicitly in MySQL, so a migration that fails half way leaves
// its version marked dirty; Up and Down refuse to run until an operator has
// repaired the schema and called Force.
package migrations
