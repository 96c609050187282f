package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// EnvPrefix prefixes every environment variable the loader reads.
const EnvPrefix = "TXMSG"

// FileEnv names the environment variable that may name the YAML file instead
// of --config.
const FileEnv = EnvPrefix + "_CONFIG"

// key is one configuration setting: its dotted name, the flag that sets it,
// its default (written as a user would write it) and a one-line description.
type key struct {
	name  string
	flag  string
	def   string
	usage string
}

// Loader resolves one daemon's configuration into a T. It registers a flag
// per key on the FlagSet given to its constructor; call Load after the
// FlagSet has been parsed. A Loader is not safe for concurrent use, except
// that Watch may run while nothing else calls it.
type Loader[T any] struct {
	fs    *pflag.FlagSet
	keys  []key
	file  *string
	build func(r *reader) T
}

func newLoader[T any](fs *pflag.FlagSet, keys []key, build func(r *reader) T) *Loader[T] {
	l := &Loader[T]{fs: fs, keys: keys, build: build}
	l.file = fs.String("config", "", "YAML configuration file (env "+FileEnv+")")
	for _, k := range keys {
		fs.Var(&flagValue{s: k.def, typ: typeName(k)}, k.flag, k.usage+" (key "+k.name+", env "+envName(k.name)+")")
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

// typeName is what --help shows for a key's value, judged by its default.
// It must not be a pflag type name such as "int" or "bool": viper converts
// the values of such flags itself, turning "many" into 0 silently.
func typeName(k key) string {
	if k.name == "kafka.brokers" {
		return "list"
	}
	if _, err := strconv.Atoi(k.def); err == nil {
		return "number"
	}
	if _, err := time.ParseDuration(k.def); err == nil {
		return "duration"
	}
	return "string"
}

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
	t := l.build(r)
	if err := errors.Join(r.errs...); err != nil {
		return zero, err
	}
	return t, nil
}

// viper builds a fresh viper instance holding defaults, the file, the
// environment and the flags of l.
func (l *Loader[T]) viper() (*viper.Viper, error) {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
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

// checkKnown rejects keys of the file that l does not define: a typo must not
// silently fall back to the default.
func (l *Loader[T]) checkKnown(path string, f *viper.Viper) error {
	var errs []error
	fileKeys := f.AllKeys()
	slices.Sort(fileKeys)
	for _, fk := range fileKeys {
		if f.Get(fk) == nil && slices.ContainsFunc(l.keys, func(k key) bool { return strings.HasPrefix(k.name, fk+".") }) {
			continue // a section whose keys are all commented out
		}
		if !slices.ContainsFunc(l.keys, func(k key) bool { return k.name == fk }) {
			errs = append(errs, fmt.Errorf("config: %s: unknown key %s", path, fk))
		}
	}
	return errors.Join(errs...)
}
