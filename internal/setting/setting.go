// Package setting holds what every Config struct shares: an error that names
// the bad setting and its value, a collector that reports all of them at
// once, and FillZero, which applies defaults to the fields left zero.
package setting

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Error is one bad setting: Key names it as the configuration files do
// ("relay.batch_size"), Value is the bad value as shown to users, Want says
// what is accepted.
type Error struct {
	Key   string
	Value string
	Want  string
}

// Error renders "relay.batch_size: -1: want 1 to 10000".
func (e *Error) Error() string { return e.Key + ": " + e.Value + ": " + e.Want }

// Problems collects the bad settings of a configuration; the zero value is
// ready to use.
type Problems struct {
	errs []error
}

// Add records that key holds the bad value val, for the reason want.
func (p *Problems) Add(key string, val any, want string) {
	p.errs = append(p.errs, &Error{Key: key, Value: Show(val), Want: want})
}

// Check records a problem unless ok.
func (p *Problems) Check(ok bool, key string, val any, want string) {
	if !ok {
		p.Add(key, val, want)
	}
}

// Join records the problems of a nested configuration's Validate, if any.
func (p *Problems) Join(err error) {
	if err != nil {
		p.errs = append(p.errs, err)
	}
}

// Err returns every recorded problem joined, or nil.
func (p *Problems) Err() error { return errors.Join(p.errs...) }

// Show renders a value for a message: strings and durations are quoted, so
// that an empty or blank value is visible.
func Show(val any) string {
	switch x := val.(type) {
	case string:
		return strconv.Quote(x)
	case time.Duration:
		return strconv.Quote(FormatDuration(x))
	case []string:
		return strconv.Quote(strings.Join(x, ","))
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = Show(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	default:
		return fmt.Sprint(x)
	}
}

// FormatDuration writes d as a user would: 5m rather than 5m0s.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Leaves returns the leaf errors of err: the members of joined errors,
// recursively; err itself when it joins nothing.
func Leaves(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, Leaves(e)...)
	}
	return out
}

// FillZero sets each zero field of the struct *dst to the same field of def,
// descending into nested structs; dst must point to a struct of def's type.
// Non-zero fields, including those of nested structs, are kept.
func FillZero[T any](dst *T, def T) {
	fillZero(reflect.ValueOf(dst).Elem(), reflect.ValueOf(def))
}

func fillZero(dst, def reflect.Value) {
	for i := range dst.NumField() {
		f := dst.Field(i)
		if !f.CanSet() {
			continue
		}
		if f.Kind() == reflect.Struct {
			fillZero(f, def.Field(i))
			continue
		}
		if f.IsZero() {
			f.Set(def.Field(i))
		}
	}
}

// ListenAddr reports whether s is HOST:PORT to listen on: HOST may be empty
// (every interface), PORT a number from 0 to 65535 (0: any free port).
func ListenAddr(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n <= 65535
}
