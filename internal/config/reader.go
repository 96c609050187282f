package config

import (
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/txmsg/txmsg/internal/setting"
)

// reader converts resolved values to the Go types of their fields. It only
// converts: the bounds of each setting are checked by the Validate of the
// struct that holds it. It collects one error per bad key so that Load
// reports them all.
type reader struct {
	v    *viper.Viper
	errs setting.Problems
}

// fail records that key holds the bad value val, for the reason want; the
// value of a secret key is not shown.
func (r *reader) fail(key string, val any, want string) {
	if secretKey(key) {
		val = "***"
	}
	r.errs.Add(key, val, want)
}

// secretKey reports whether key holds a secret (a password, a token, a DSN
// with its password), whose value no message may show.
func secretKey(key string) bool {
	return strings.HasSuffix(key, "password") || strings.HasSuffix(key, "token") ||
		strings.HasSuffix(key, "secret") || key == "db.dsn"
}

// maskKey hides what follows a secret key in a key path: a map written
// where a secret belongs turns the secret into a key.
func maskKey(path string) string {
	for i := strings.IndexByte(path, '.'); i >= 0; i = nextDot(path, i) {
		if secretKey(path[:i]) {
			return path[:i] + ".***"
		}
	}
	return path
}

func nextDot(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '.')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// set converts k's resolved value and stores it in the struct dst; a value
// that does not convert leaves the field as it is.
func (r *reader) set(dst reflect.Value, k key) {
	f := dst.FieldByIndex(k.index)
	switch k.typ {
	case durationType:
		if d, ok := r.duration(k.name); ok {
			f.SetInt(int64(d))
		}
		return
	case levelType:
		if l, ok := r.level(k.name); ok {
			f.SetInt(int64(l))
		}
		return
	case listType:
		if l, ok := r.list(k.name); ok {
			f.Set(reflect.ValueOf(l))
		}
		return
	}
	switch k.typ.Kind() {
	case reflect.Int, reflect.Int64:
		if n, ok := r.integer(k.name); ok {
			f.SetInt(n)
		}
	case reflect.Bool:
		if b, ok := r.boolean(k.name); ok {
			f.SetBool(b)
		}
	case reflect.String:
		if s, ok := r.str(k.name); ok {
			f.SetString(s)
		}
	default:
		// keysOf's callers tag only the kinds above; a test loads every
		// daemon, so a new kind fails there first.
		r.fail(k.name, "", "unsupported setting type "+k.typ.String())
	}
}

// str returns key as a string; lists and maps are errors, and so are
// numbers and booleans from a file: YAML reads 0123 as 123 and 0x1F as 31,
// so an unquoted password or name would silently change.
func (r *reader) str(key string) (string, bool) {
	switch x := r.v.Get(key).(type) {
	case nil:
		return "", true
	case string:
		return strings.TrimSpace(x), true
	case int, int64, uint64, float64, bool:
		r.fail(key, x, "want a string: quote it (YAML reads it as a number or a boolean, which may change it)")
		return "", false
	default:
		r.fail(key, x, "want a string")
		return "", false
	}
}

// integer returns key as a whole number.
func (r *reader) integer(key string) (int64, bool) {
	raw := r.v.Get(key)
	switch x := raw.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case float64:
		if x != float64(int64(x)) {
			r.fail(key, x, "want a whole number")
			return 0, false
		}
		return int64(x), true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			r.fail(key, x, "want a whole number")
			return 0, false
		}
		return n, true
	default:
		r.fail(key, raw, "want a whole number")
		return 0, false
	}
}

// boolean returns key as true or false.
func (r *reader) boolean(key string) (bool, bool) {
	raw := r.v.Get(key)
	switch x := raw.(type) {
	case bool:
		return x, true
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		if err != nil {
			r.fail(key, x, "want true or false")
			return false, false
		}
		return b, true
	default:
		r.fail(key, raw, "want true or false")
		return false, false
	}
}

// duration returns key as a Go duration ("250ms", "10s", "1h30m"). A bare 0
// is accepted as no time.
func (r *reader) duration(key string) (time.Duration, bool) {
	raw := r.v.Get(key)
	switch x := raw.(type) {
	case time.Duration:
		return x, true
	case int:
		if x != 0 {
			r.fail(key, x, "want a duration with a unit, such as 250ms or 10s")
			return 0, false
		}
		return 0, true
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(x))
		if err != nil {
			r.fail(key, x, "want a duration such as 250ms or 10s")
			return 0, false
		}
		return d, true
	default:
		r.fail(key, raw, "want a duration such as 250ms or 10s")
		return 0, false
	}
}

// list returns key as a list of non-empty strings: a YAML sequence, or a
// comma-separated string (flags and the environment).
func (r *reader) list(key string) ([]string, bool) {
	raw := r.v.Get(key)
	var items []string
	switch x := raw.(type) {
	case nil:
	case string:
		items = strings.Split(x, ",")
	case []string:
		items = x
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				r.fail(key, raw, "want a list of strings")
				return nil, false
			}
			items = append(items, s)
		}
	default:
		r.fail(key, raw, "want a list or a comma-separated string")
		return nil, false
	}
	var out []string
	for _, s := range items {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, true
}

// level returns key as one of the four named slog levels
// (case-insensitive).
func (r *reader) level(key string) (slog.Level, bool) {
	s, ok := r.str(key)
	if !ok {
		return 0, false
	}
	levels := []slog.Level{slog.LevelInfo, slog.LevelDebug, slog.LevelWarn, slog.LevelError}
	names := make([]string, len(levels))
	for i, l := range levels {
		names[i] = strings.ToLower(l.String())
		if strings.EqualFold(s, names[i]) {
			return l, true
		}
	}
	r.fail(key, strings.ToLower(s), "want one of "+strings.Join(names, ", "))
	return 0, false
}
