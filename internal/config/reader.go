package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/spf13/viper"
)

// reader converts resolved values to Go types, collecting one error per bad
// key so that Load reports them all.
type reader struct {
	v    *viper.Viper
	errs []error
}

// fail records that key holds the bad value val, for the reason want.
func (r *reader) fail(key string, val any, want string) {
	r.errs = append(r.errs, fmt.Errorf("config: %s: %s: %s", key, show(val), want))
}

// show renders a value for an error message: strings are quoted so that an
// empty or blank value is visible.
func show(val any) string {
	switch x := val.(type) {
	case string:
		return strconv.Quote(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = show(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	default:
		return fmt.Sprint(x)
	}
}

// str returns key as a string; lists and maps are errors.
func (r *reader) str(key string) string {
	switch x := r.v.Get(key).(type) {
	case nil:
		return ""
	case string:
		return strings.TrimSpace(x)
	case int, int64, float64, bool:
		return fmt.Sprint(x)
	default:
		r.fail(key, x, "want a string")
		return ""
	}
}

// integer returns key as an int within [lo, hi].
func (r *reader) integer(key string, lo, hi int) int {
	raw := r.v.Get(key)
	var n int
	switch x := raw.(type) {
	case int:
		n = x
	case int64:
		n = int(x)
	case float64:
		if x != float64(int(x)) {
			r.fail(key, x, "want a whole number")
			return 0
		}
		n = int(x)
	case string:
		v, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil {
			r.fail(key, x, "want a whole number")
			return 0
		}
		n = v
	default:
		r.fail(key, raw, "want a whole number")
		return 0
	}
	if n < lo || n > hi {
		r.fail(key, n, fmt.Sprintf("want %d to %d", lo, hi))
	}
	return n
}

// duration returns key as a Go duration ("250ms", "10s", "1h30m") of at
// least lo. A bare 0 is accepted as no time.
func (r *reader) duration(key string, lo time.Duration) time.Duration {
	raw := r.v.Get(key)
	var d time.Duration
	switch x := raw.(type) {
	case time.Duration:
		d = x
	case int:
		if x != 0 {
			r.fail(key, x, "want a duration with a unit, such as 250ms or 10s")
			return 0
		}
	case string:
		v, err := time.ParseDuration(strings.TrimSpace(x))
		if err != nil {
			r.fail(key, x, "want a duration such as 250ms or 10s")
			return 0
		}
		d = v
	default:
		r.fail(key, raw, "want a duration such as 250ms or 10s")
		return 0
	}
	if d < lo {
		r.fail(key, d.String(), "want at least "+lo.String())
	}
	return d
}

// list returns key as a list of non-empty strings: a YAML sequence, or a
// comma-separated string (flags and the environment).
func (r *reader) list(key string) []string {
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
				return nil
			}
			items = append(items, s)
		}
	default:
		r.fail(key, raw, "want a list or a comma-separated string")
		return nil
	}
	var out []string
	for _, s := range items {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// oneOf returns key, which must be one of allowed (case-insensitive).
func (r *reader) oneOf(key string, allowed ...string) string {
	s := strings.ToLower(r.str(key))
	for _, a := range allowed {
		if s == a {
			return s
		}
	}
	r.fail(key, s, "want one of "+strings.Join(allowed, ", "))
	return allowed[0]
}

// cronSpec checks that spec parses as the engines parse it (robfig/cron's
// standard parser: five fields or a descriptor such as "@every 1m").
func (r *reader) cronSpec(key, spec string) {
	if _, err := cron.ParseStandard(spec); err != nil {
		r.fail(key, spec, "want a cron spec such as \"@every 1m\" or \"*/5 * * * *\": "+err.Error())
	}
}
