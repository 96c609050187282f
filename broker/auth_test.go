package broker

import (
	"strings"
	"testing"
)

// FuzzBrokerAuthHeader parses arbitrary Authorization headers: no panic;
// an accepted token is token68 of bounded length that the header carried;
// and every token68 is accepted back.
func FuzzBrokerAuthHeader(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  txgt_00ff", "Bearer", "Bearer ", "Basic dXNlcg==", "Bearer a b",
		"Bearer ===", "Bearer abc==", "BEARER x/y+z~.-_", "Bearer\tabc", "Bearer " + strings.Repeat("a", 600)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, ok := parseBearer(h)
		if !ok {
			if tok != "" {
				t.Fatalf("%q: refused but returned %q", h, tok)
			}
			return
		}
		if tok == "" || len(tok) > maxTokenLen || !strings.HasSuffix(h, tok) || strings.ContainsAny(tok, " \t\r\n,\"") {
			t.Fatalf("%q: accepted token %q", h, tok)
		}
		if again, ok := parseBearer("Bearer " + tok); !ok || again != tok {
			t.Fatalf("%q: token %q does not parse back (%q, %v)", h, tok, again, ok)
		}
	})
}

func TestBrokerAuthParseBearer(t *testing.T) {
	t.Parallel()
	for h, want := range map[string]string{
		"Bearer abc":          "abc",
		"bearer   txgt_0f":    "txgt_0f",
		"BEARER a.b-c~d+e/f=": "a.b-c~d+e/f=",
		"Bearer":              "",
		"Bearer ":             "",
		"Bearer a b":          "",
		"Bearer ==":           "",
		"Basic abc":           "",
		"Bearerabc":           "",
		"Bearer abc ":         "",
		"Bearer a=b":          "",
	} {
		if got, ok := parseBearer(h); got != want || ok != (want != "") {
			t.Errorf("parseBearer(%q) = %q, %v; want %q", h, got, ok, want)
		}
	}
}
