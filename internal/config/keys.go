package config

import (
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/txmsg/txmsg/internal/setting"
)

// key is one configuration setting, found by its struct tag in a daemon's
// configuration struct: its dotted name, the flag that sets it, its default
// (written as a user would write it), a one-line description, and where the
// value lives in the struct.
type key struct {
	name  string
	flag  string
	def   string
	usage string
	index []int
	typ   reflect.Type
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	levelType    = reflect.TypeFor[slog.Level]()
	listType     = reflect.TypeFor[[]string]()
)

// keysOf lists the keys of def's type: every field tagged `key:"a.b"`, in
// nested structs too, with def's value of it as the default. The tag `flag`
// names a flag other than the key, `help` describes the key.
func keysOf(def any) []key {
	return appendKeys(nil, reflect.ValueOf(def), nil)
}

func appendKeys(out []key, v reflect.Value, index []int) []key {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		idx := append(append([]int(nil), index...), i)
		name, tagged := f.Tag.Lookup("key")
		if !tagged {
			if f.Type.Kind() == reflect.Struct {
				out = appendKeys(out, v.Field(i), idx)
			}
			continue
		}
		flag := f.Tag.Get("flag")
		if flag == "" {
			flag = name
		}
		out = append(out, key{name: name, flag: flag, def: formatValue(v.Field(i)), usage: f.Tag.Get("help"), index: idx, typ: f.Type})
	}
	return out
}

// formatValue writes a default as a user would write it in a file or flag.
func formatValue(v reflect.Value) string {
	switch {
	case v.Type() == durationType:
		return setting.FormatDuration(time.Duration(v.Int()))
	case v.Type() == levelType:
		return strings.ToLower(slog.Level(v.Int()).String())
	case v.Type() == listType:
		return strings.Join(v.Interface().([]string), ",")
	}
	switch v.Kind() {
	case reflect.Int, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	default:
		return v.String()
	}
}

// typeName is what --help shows for a key's value. It must not be a pflag
// type name such as "int" or "bool": viper converts the values of such flags
// itself, turning "many" into 0 silently.
func typeName(k key) string {
	switch k.typ {
	case durationType:
		return "duration"
	case levelType:
		return "level"
	case listType:
		return "list"
	}
	switch k.typ.Kind() {
	case reflect.Int, reflect.Int64:
		return "number"
	case reflect.Bool:
		return "true|false"
	default:
		return "string"
	}
}
