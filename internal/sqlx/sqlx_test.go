package sqlx

import (
	"testing"
)

func TestSqlxValidIdent(t *testing.T) {
	for name, want := range map[string]bool{
		"txmsg_outbox": true, "_x1": true, "": false, "1abc": false, "a-b": false, "a b": false,
		"t;DROP": false, "a2345678901234567890123456789012345678901234567890123456789012345": false,
	} {
		if got := ValidIdent(name); got != want {
			t.Errorf("ValidIdent(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSqlxPlaceholdersAndTruncate(t *testing.T) {
	if got := Placeholders(3); got != "?,?,?" {
		t.Errorf("Placeholders(3) = %q", got)
	}
	if got := Placeholders(1); got != "?" {
		t.Errorf("Placeholders(1) = %q", got)
	}
	// "é" is two bytes: a cut at 2 would split it.
	if got := Truncate("aé", 2); got != "a" {
		t.Errorf("Truncate(aé, 2) = %q, want a", got)
	}
	if got := Truncate("abc", 5); got != "abc" {
		t.Errorf("Truncate(abc, 5) = %q", got)
	}
}
