package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/txmsg/txmsg/internal/setting"
)

// EnvPrefix prefixes every environment variable the loader reads.
const EnvPrefix = "TXMSG"

// FileEnv names the environment variable that may name the YAML file instead
// of --config.
const FileEnv = EnvPrefix + "_CONFIG"

// Loader resolves one daemon's configuration into a T. Its keys are the
// tagged fields of T (see keysOf) and their defaults are those of the T given
// to its constructor, so that each setting's default lives in one place: the
// DefaultConfig of the package it configures. It registers a flag per key on
// the FlagSet given to its constructor; call Load after the FlagSet has been
// parsed. A Loader is not safe for concurrent use, except that Watch may run
// while nothing else calls it.
type Loader[T any] struct {
	fs     *pflag.FlagSet
	keys   []key
	file   *string
	def    T
	finish func(*T) error
}

// newLoader returns a Loader of def's keys. After the values are read,
// finish completes the configuration (copying shared settings, filling
// derived defaults) and returns its validation errors.
func newLoader[T any](fs *pflag.FlagSet, def T, finish func(*T) error) *Loader[T] {
	l := &Loader[T]{fs: fs, keys: keysOf(def), def: def, finish: finish}
	l.file = fs.String("config", "", "YAML configuration file (env "+FileEnv+")")
	for _, k := range l.keys {
		fs.Var(&flagValue{s: k.def, typ: typeName(k)}, k.flag, k.usage+" (key "+k.name+", env "+envName(k.name)+")")
		if k.typ.Kind() == reflect.Bool {
			fs.Lookup(k.flag).NoOptDefVal = "true"
		}
	}
	return l
}

// flagValue holds a flag's text as given; the reader converts and checks
// it like every other source, so that errors name the key.
type flagValue struct {
	s   string
	typ string
}

func (v *flagValue) String() string     { return v.s }
func (v *flagValue) Set(s string) error { v.s = s; return nil }
func (v *flagValue) Type() string       { return v.typ }

func envName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// File returns the configuration file in use: --config, else $TXMSG_CONFIG,
// else "" (none).
func (l *Loader[T]) File() string {
	if *l.file != "" {
		return *l.file
	}
	return os.Getenv(FileEnv)
}

// Load resolves every key (flag > env > file > default), converts and
// validates it, and returns the typed configuration or an error naming each
// bad key and value.
func (l *Loader[T]) Load() (T, error) {
	var zero T
	v, err := l.viper()
	if err != nil {
		return zero, err
	}
	r := &reader{v: v}
	t := l.def
	dst := reflect.ValueOf(&t).Elem()
	for _, k := range l.keys {
		r.set(dst, k)
	}
	r.errs.Join(l.finish(&t))
	if err := report(r.errs.Err()); err != nil {
		return zero, err
	}
	return t, nil
}

// report prefixes each problem of err with "config: ", keeping the first
// problem of each key only: a value that does not convert, or a setting two
// structs check (the relay's copy of kafka.brokers), is reported once.
func report(err error) error {
	var out []error
	seen := map[string]bool{}
	for _, e := range setting.Leaves(err) {
		if se, ok := e.(*setting.Error); ok {
			if seen[se.Key] {
				continue
			}
			seen[se.Key] = true
		}
		out = append(out, fmt.Errorf("config: %w", e))
	}
	return errors.Join(out...)
}

// viper builds a fresh viper instance holding defaults, the file, the
// environment and the flags of l.
func (l *Loader[T]) viper() (*viper.Viper, error) {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	// An empty variable is a value: TXMSG_METRICS_LISTEN= turns the metrics
	// server off, as --metrics.listen= does.
	v.AllowEmptyEnv(true)
	if err := l.checkEnv(os.Environ()); err != nil {
		return nil, err
	}
	for _, k := range l.keys {
		v.SetDefault(k.name, k.def)
		// BindPFlag only errs on a nil flag; newLoader registered each one.
		if err := v.BindPFlag(k.name, l.fs.Lookup(k.flag)); err != nil {
			return nil, fmt.Errorf("config: bind flag --%s: %w", k.flag, err)
		}
	}
	path := l.File()
	if path == "" {
		return v, nil
	}
	settings, err := readFile(path)
	if err != nil {
		return nil, err
	}
	if err := l.checkKnown(path, settings); err != nil {
		return nil, err
	}
	if err := v.MergeConfigMap(settings.AllSettings()); err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return v, nil
}

// readFile parses the YAML file at path on its own, so that its keys can be
// checked before they are merged.
func readFile(path string) (*viper.Viper, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: read file: %w", err)
	}
	f := viper.New()
	f.SetConfigType("yaml")
	if err := f.ReadConfig(bytes.NewReader(body)); err != nil {
		var pe viper.ConfigParseError
		if errors.As(err, &pe) {
			err = pe.Unwrap()
		}
		return nil, fmt.Errorf("config: %s: malformed YAML: %w", path, err)
	}
	return f, nil
}

// checkKnown rejects keys of the file that no txmsg command defines: a typo
// must not silently fall back to the default. Keys of another command are
// passed over, so that the admin commands read a daemon's file (the relay's
// for migrate, the broker's for group).
func (l *Loader[T]) checkKnown(path string, f *viper.Viper) error {
	known := slices.Concat(l.keys, allKeys())
	var errs []error
	fileKeys := f.AllKeys()
	slices.Sort(fileKeys)
	for _, fk := range fileKeys {
		if f.Get(fk) == nil && slices.ContainsFunc(known, func(k key) bool { return strings.HasPrefix(k.name, fk+".") }) {
			continue // a section whose keys are all commented out
		}
		if !slices.ContainsFunc(known, func(k key) bool { return k.name == fk }) {
			errs = append(errs, fmt.Errorf("config: %s: unknown key %s", path, maskKey(fk)))
		}
	}
	return errors.Join(errs...)
}

// envExempt are prefixes of variables that txmsg's own tests and
// benchmarks read (TXMSG_TEST_MYSQL_DSN, TXMSG_BENCH_ROWS), not the loader.
// TXMSG_SERVICE_* and TXMSG_PORT* are what Kubernetes (and docker --link)
// set in every pod beside a Service named txmsg.
var envExempt = []string{EnvPrefix + "_TEST_", EnvPrefix + "_BENCH_", EnvPrefix + "_SERVICE_", EnvPrefix + "_PORT"}

// checkEnv rejects TXMSG_ variables of environ that name no key, as
// checkKnown rejects such keys of the file: TXMSG_RELAY_BATCHSIZE must not
// leave relay.batch_size at its default without a word. The error names the
// variable (never its value) and, when one is spelled alike, the variable
// meant.
func (l *Loader[T]) checkEnv(environ []string) error {
	known := map[string]bool{FileEnv: true}
	near := map[string]string{}
	for _, k := range slices.Concat(l.keys, allKeys()) {
		name := envName(k.name)
		known[name] = true
		near[squash(name)] = name
	}
	var errs []error
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix+"_") || known[name] ||
			slices.ContainsFunc(envExempt, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		err := fmt.Errorf("config: unknown environment variable %s", name)
		if meant, ok := near[squash(name)]; ok {
			err = fmt.Errorf("%w (did you mean %s?)", err, meant)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// squash is name in upper case without underscores, so that names which
// differ only there compare equal.
func squash(name string) string {
	return strings.ReplaceAll(strings.ToUpper(name), "_", "")
}

// allKeys is every key of every txmsg command's configuration.
func allKeys() []key {
	return slices.Concat(keysOf(DefaultRelay()), keysOf(DefaultBroker()), keysOf(DefaultAdmin()),
		keysOf(Group{DB: defaultDB(), Log: defaultLog()}))
}
