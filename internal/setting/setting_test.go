package setting

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSettingFillZero(t *testing.T) {
	t.Parallel()
	type inner struct {
		N int
		S string
	}
	type outer struct {
		D     time.Duration
		L     []string
		In    inner
		IsSet bool
	}
	def := outer{D: time.Second, L: []string{"a"}, In: inner{N: 3, S: "s"}, IsSet: true}
	got := outer{In: inner{N: 7}}
	FillZero(&got, def)
	if got.D != time.Second || len(got.L) != 1 || got.In.N != 7 || got.In.S != "s" || !got.IsSet {
		t.Fatalf("FillZero: %+v", got)
	}
}

func TestSettingProblems(t *testing.T) {
	t.Parallel()
	var p Problems
	if p.Err() != nil {
		t.Fatal("empty Problems has an error")
	}
	p.Check(true, "a.ok", 1, "never")
	p.Add("a.n", -1, "want 1 to 2")
	p.Add("a.d", 90*time.Minute, "want less")
	var q Problems
	q.Add("b.s", "", "required")
	p.Join(q.Err())
	leaves := Leaves(p.Err())
	var msgs []string
	for _, e := range leaves {
		msgs = append(msgs, e.Error())
	}
	want := `a.n: -1: want 1 to 2|a.d: "1h30m": want less|b.s: "": required`
	if got := strings.Join(msgs, "|"); got != want {
		t.Fatalf("problems %q, want %q", got, want)
	}
	var se *Error
	if !errors.As(leaves[0], &se) || se.Key != "a.n" {
		t.Fatalf("leaf %v is no *Error", leaves[0])
	}
}

func TestSettingFormatDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{5 * time.Minute: "5m", 24 * time.Hour: "24h", 90 * time.Minute: "1h30m",
		10 * time.Second: "10s", 0: "0s", time.Millisecond: "1ms", -time.Hour: "-1h"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
