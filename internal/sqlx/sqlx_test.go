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
