package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/txmsg/txmsg/internal/setting"
)

// daemon is one daemon's key table and defaults, as the loader derives them.
type daemon struct {
	name string
	keys []key
	def  reflect.Value
	load func(args ...string) error
}

func daemons(t *testing.T) []daemon {
	t.Helper()
	loadWith := func(newLoader func(*pflag.FlagSet) func() error) func(args ...string) error {
		return func(args ...string) error {
			fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
			load := newLoader(fs)
			if err := fs.Parse(args); err != nil {
				return err
			}
			return load()
		}
	}
	return []daemon{
		{"relay", keysOf(DefaultRelay()), reflect.ValueOf(DefaultRelay()), loadWith(func(fs *pflag.FlagSet) func() error {
			l := NewRelay(fs)
			return func() error { _, err := l.Load(); return err }
		})},
		{"broker", keysOf(DefaultBroker()), reflect.ValueOf(DefaultBroker()), loadWith(func(fs *pflag.FlagSet) func() error {
			l := NewBroker(fs)
			return func() error {
				// The file ships without a token, as it must.
				if err := fs.Set("broker.auth.operator_token", "test-operator-token-0123456789"); err != nil {
					return err
				}
				_, err := l.Load()
				return err
			}
		})},
	}
}

// exampleKeys are required settings without a default: the files show an
// example value for them.
var exampleKeys = map[string]bool{"db.dsn": true, "kafka.brokers": true}

// convert reads raw as the loader reads a value of k, into a fresh copy of
// def, and returns the field's value.
func convert(t *testing.T, k key, def reflect.Value, raw any) (any, error) {
	t.Helper()
	v := viper.New()
	v.Set(k.name, raw)
	r := &reader{v: v}
	dst := reflect.New(def.Type()).Elem()
	dst.Set(def)
	r.set(dst, k)
	return dst.FieldByIndex(k.index).Interface(), r.errs.Err()
}

// TestConfigExampleFilesMatchDefaults checks configs/*.yaml: each lists
// every key of its daemon with the default the code has, and loads.
func TestConfigExampleFilesMatchDefaults(t *testing.T) {
	t.Parallel()
	for _, d := range daemons(t) {
		path := filepath.Join("..", "..", "configs", d.name+".yaml")
		f, err := readFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range d.keys {
			if !f.IsSet(k.name) {
				t.Errorf("%s lacks key %s", path, k.name)
				continue
			}
			if exampleKeys[k.name] {
				continue
			}
			got, err := convert(t, k, d.def, f.Get(k.name))
			if want := d.def.FieldByIndex(k.index).Interface(); err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("%s: %s is %v (%v); the default in code is %q", path, k.name, f.Get(k.name), err, k.def)
			}
		}
		if err := d.load("--config", path); err != nil {
			t.Errorf("load %s: %v", path, err)
		}
	}
}

// defaultCell is a README default: VALUE, or VALUE (DAEMON: VALUE) where
// one daemon's default differs.
var defaultCell = regexp.MustCompile(`^(.*?)(?: \((\w+): (.*)\))?$`)

// TestConfigReadmeTablesMatchDefaults checks every README table with the
// columns key, default, meaning: each key exists and its default is the
// code's, in each daemon that has the key.
func TestConfigReadmeTablesMatchDefaults(t *testing.T) {
	t.Parallel()
	body, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := readmeKeyRows(string(body))
	if len(rows) == 0 {
		t.Fatal("README.md has no table with the columns key | default | meaning")
	}
	ds := daemons(t)
	for _, row := range rows {
		m := defaultCell.FindStringSubmatch(row.def)
		found := false
		for _, d := range ds {
			i := slicesIndex(d.keys, row.key)
			if i < 0 {
				continue
			}
			found = true
			cell := m[1]
			if m[2] == d.name {
				cell = m[3]
			}
			k := d.keys[i]
			got, err := convert(t, k, d.def, unquote(cell))
			if want := d.def.FieldByIndex(k.index).Interface(); err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("README: %s default %q (%v) for %s; the default in code is %q", row.key, cell, err, d.name, k.def)
			}
		}
		if !found {
			t.Errorf("README: key %s is no daemon's", row.key)
		}
	}
}

func slicesIndex(keys []key, name string) int {
	for i, k := range keys {
		if k.name == name {
			return i
		}
	}
	return -1
}

// unquote turns the README's "" into an empty value.
func unquote(cell string) string {
	if cell == `""` {
		return ""
	}
	return cell
}

type readmeRow struct{ key, def string }

// readmeKeyRows returns the rows of the markdown tables whose header is
// | key | default | meaning |, with backticks removed, one per key.
func readmeKeyRows(doc string) []readmeRow {
	var rows []readmeRow
	inTable := false
	for _, line := range strings.Split(doc, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(strings.ReplaceAll(cells[i], "`", ""))
		}
		switch {
		case len(cells) >= 3 && cells[0] == "key" && cells[1] == "default":
			inTable = true
		case inTable && strings.HasPrefix(cells[0], "---"):
		case inTable && len(cells) >= 2:
			// "a / b" lists keys that share the default.
			for _, k := range strings.Split(cells[0], " / ") {
				rows = append(rows, readmeRow{key: k, def: cells[1]})
			}
		}
	}
	return rows
}

func TestConfigReadmeTableParser(t *testing.T) {
	t.Parallel()
	doc := "| key | default | meaning |\n| --- | --- | --- |\n| `relay.poll_max` | 250ms (broker: 50ms) | x |\n| `a.b` / `a.c` | \"\" | y |\n\n| a | b |\n| c | d |\n"
	rows := readmeKeyRows(doc)
	if len(rows) != 3 || rows[0] != (readmeRow{"relay.poll_max", "250ms (broker: 50ms)"}) || rows[2] != (readmeRow{"a.c", `""`}) {
		t.Fatalf("rows %+v", rows)
	}
	m := defaultCell.FindStringSubmatch(rows[0].def)
	if m[1] != "250ms" || m[2] != "broker" || m[3] != "50ms" {
		t.Fatalf("cell %q", m)
	}
}

// TestConfigValidateNamesKnownKeys sets each key to a bad value in turn: a
// problem Validate reports names a key of the daemon, so that the names in
// the Validate methods cannot drift from the struct tags.
func TestConfigValidateNamesKnownKeys(t *testing.T) {
	t.Parallel()
	finish := map[string]func(v reflect.Value) error{
		"relay": func(v reflect.Value) error {
			c := v.Interface().(Relay)
			return NewRelay(pflag.NewFlagSet("x", pflag.ContinueOnError)).finish(&c)
		},
		"broker": func(v reflect.Value) error {
			c := v.Interface().(Broker)
			return NewBroker(pflag.NewFlagSet("x", pflag.ContinueOnError)).finish(&c)
		},
	}
	for _, d := range daemons(t) {
		for _, k := range d.keys {
			v := reflect.New(d.def.Type()).Elem()
			v.Set(d.def)
			f := v.FieldByIndex(k.index)
			switch f.Kind() {
			case reflect.Int, reflect.Int64:
				f.SetInt(-1 << 40)
			case reflect.String:
				f.SetString("bad value")
			case reflect.Slice:
				f.Set(reflect.ValueOf([]string{"nohost"}))
			}
			for _, e := range setting.Leaves(finish[d.name](v)) {
				var se *setting.Error
				if !errors.As(e, &se) {
					continue
				}
				if slicesIndex(d.keys, se.Key) < 0 && se.Key != "checkback lease" {
					t.Errorf("%s: %s bad: problem %q names no key", d.name, k.name, e)
				}
			}
		}
	}
}
