// Package config loads the daemons' configuration with viper from, in order of
// precedence, command-line flags, environment variables prefixed TXMSG_
// (db.dsn is TXMSG_DB_DSN; lists such as kafka.brokers are comma-separated), a
// YAML file named by --config (or TXMSG_CONFIG), and built-in defaults.
//
// It is the only package that imports viper. It holds no defaults and no
// bounds of its own for the engines' settings: the keys are the fields tagged
// `key:"relay.batch_size"` in the Config structs (relay.Config, broker.Config,
// kafkax.Config, and the DB, Metrics and Log sections here), their defaults
// are the values of those packages' DefaultConfig, and the structs' Validate
// methods check them. It returns typed structs (Relay, Admin, ...) after
// validation; an error names the key and the bad value, as in
// "config: relay.batch_size: -1: want 1 to 10000". An empty environment
// variable is a value, as an empty flag is. A key in the file that
// no daemon knows is an error naming it, and malformed YAML names the file and
// the line. Watch re-reads the file when it changes, so that settings such as
// log.level apply without a restart.
package config
