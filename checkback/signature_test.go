package checkback

import (
	"strings"
	"testing"
	"time"
)

// FuzzCheckbackSignature parses arbitrary signature headers: no panic, a
// parsed one has a time and MACs of the right size; and what Sign makes,
// VerifySignature accepts for that body and secret only.
func FuzzCheckbackSignature(f *testing.F) {
	for _, s := range []string{"t=1700000000,v1=" + strings.Repeat("ab", 32), "", "t=", "v1=", "t=1,t=2,v1=00",
		"t=1,v1=" + strings.Repeat("0", 64) + ",v2=zz", " t=1 , v1=" + strings.Repeat("f", 64), "t=-1,v1=00", "t=99999999999999999999"} {
		f.Add(s, "txcs_secret", []byte(`{"id":"m"}`))
	}
	f.Fuzz(func(t *testing.T, header, secret string, body []byte) {
		if sig, err := parseSignature(header); err == nil {
			if sig.ts == "" || len(sig.v1) == 0 {
				t.Fatalf("%q parsed to %+v", header, sig)
			}
			for _, m := range sig.v1 {
				if len(m) != 32 {
					t.Fatalf("%q: MAC of %d bytes", header, len(m))
				}
			}
		}
		if secret == "" {
			return
		}
		now := time.Unix(1700000000, 0)
		signed := Sign(secret, now, body)
		if err := VerifySignature(signed, body, now.Add(time.Minute), secret); err != nil {
			t.Fatalf("Sign then VerifySignature: %v", err)
		}
		if err := VerifySignature(signed, append(body, 'x'), now, secret); err == nil {
			t.Fatal("a changed body verified")
		}
		if err := VerifySignature(signed, body, now, secret+"x"); err == nil {
			t.Fatal("another secret verified")
		}
	})
}
