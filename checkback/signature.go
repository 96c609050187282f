package checkback

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the header carrying a check-back's signature:
//
//	Txmsg-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>
//
// The HMAC key is the producer group's secret, the bytes of the string the
// broker returned when it registered the group; body is the request body as
// sent.
const SignatureHeader = "Txmsg-Signature"

// MaxSignatureAge is how far a signature's time may be from the verifier's
// clock, either way, before the request is refused as stale (a replay).
const MaxSignatureAge = 5 * time.Minute

// maxSignatureHeader bounds the header a verifier parses.
const maxSignatureHeader = 1024

// ErrBadSignature is returned by VerifySignature for a request without a
// signature, with a malformed or wrong one, or with a stale one; the error
// says which.
var ErrBadSignature = errors.New("checkback: bad signature")

// Sign returns the SignatureHeader value for body sent at t, signed with
// secret.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return m.Sum(nil)
}

// signature is a parsed SignatureHeader.
type signature struct {
	ts string // as sent: the MAC covers these bytes
	at int64
	// v1 are the v1 MACs (a sender may sign with several secrets during a
	// rotation).
	v1 [][]byte
}

// parseSignature parses a SignatureHeader value: comma-separated key=value
// pairs, exactly one t (decimal Unix seconds) and at least one v1 (64 hex
// digits). Pairs with other keys are ignored, so that a later scheme can be
// sent beside v1.
func parseSignature(h string) (signature, error) {
	var sig signature
	if h == "" {
		return sig, fmt.Errorf("%w: no %s header", ErrBadSignature, SignatureHeader)
	}
	if len(h) > maxSignatureHeader {
		return sig, fmt.Errorf("%w: %s header longer than %d bytes", ErrBadSignature, SignatureHeader, maxSignatureHeader)
	}
	seenT := false
	for part := range strings.SplitSeq(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return sig, fmt.Errorf("%w: malformed %s header: want t=…,v1=…", ErrBadSignature, SignatureHeader)
		}
		switch k {
		case "t":
			if seenT || v == "" || len(v) > 19 || strings.Trim(v, "0123456789") != "" {
				return sig, fmt.Errorf("%w: malformed %s header: t must be one decimal Unix time", ErrBadSignature, SignatureHeader)
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return sig, fmt.Errorf("%w: malformed %s header: t must be one decimal Unix time", ErrBadSignature, SignatureHeader)
			}
			seenT, sig.ts, sig.at = true, v, n
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return sig, fmt.Errorf("%w: malformed %s header: v1 must be %d hex digits", ErrBadSignature, SignatureHeader, 2*sha256.Size)
			}
			sig.v1 = append(sig.v1, b)
		}
	}
	if !seenT || len(sig.v1) == 0 {
		return sig, fmt.Errorf("%w: malformed %s header: want t=…,v1=…", ErrBadSignature, SignatureHeader)
	}
	return sig, nil
}

// VerifySignature checks header, the SignatureHeader of a request whose body
// is body, against secrets (any one may match: give the old and the new
// secret while a rotation rolls out) at time now. It returns nil, or an
// error wrapping ErrBadSignature that says what is wrong without repeating
// the header. A producer that does not use Handler verifies with it.
func VerifySignature(header string, body []byte, now time.Time, secrets ...string) error {
	sig, err := parseSignature(header)
	if err != nil {
		return err
	}
	if age := now.Sub(time.Unix(sig.at, 0)); age > MaxSignatureAge || age < -MaxSignatureAge {
		return fmt.Errorf("%w: signed %v from now, more than %v: a stale or replayed request (or clocks apart)",
			ErrBadSignature, age.Round(time.Second), MaxSignatureAge)
	}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		want := mac(s, sig.ts, body)
		for _, got := range sig.v1 {
			if hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: the signature does not match the body and the group's secret", ErrBadSignature)
}
