package codec

import (
	"bytes"
	"testing"

	"github.com/txmsg/txmsg"
)

func TestCodecHeadersRoundTrip(t *testing.T) {
	in := []txmsg.Header{{Key: "a", Value: []byte{0, 255, 'x'}}, {Key: "empty"}, {Key: "a", Value: []byte("dup")}}
	b, err := EncodeHeaders(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeHeaders(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("decoded %d headers, want %d", len(out), len(in))
	}
	for i := range in {
		if out[i].Key != in[i].Key || !bytes.Equal(out[i].Value, in[i].Value) {
			t.Errorf("header %d = %q, want %q", i, out[i], in[i])
		}
	}
	if b, err := EncodeHeaders(nil); b != nil || err != nil {
		t.Errorf("EncodeHeaders(nil) = %q, %v; want nil (SQL NULL)", b, err)
	}
	if _, err := DecodeHeaders([]byte("{not json")); err == nil {
		t.Error("DecodeHeaders accepted garbage")
	}
}

func FuzzCodecDecodeHeaders(f *testing.F) {
	f.Add([]byte(`[{"k":"a","v":"AAE="}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		hs, err := DecodeHeaders(b)
		if err != nil {
			return
		}
		again, err := EncodeHeaders(hs)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := DecodeHeaders(again)
		if err != nil || len(back) != len(hs) {
			t.Fatalf("round trip of %q: %v", b, err)
		}
	})
}

// Message.Validate sizes headers as EncodeHeaders stores them: a message
// passes exactly when its encoded headers fit txmsg.MaxHeadersBytes.
func TestCodecHeadersSizeMatchesValidate(t *testing.T) {
	for _, tc := range []struct {
		key   string
		value int
	}{
		{"abcdef", 49134}, {"abcdefg", 49134}, {"a<&>\u2028", 49110}, {"a<&>\u2028", 49131}, {"\u00e9", 49133},
	} {
		hs := []txmsg.Header{{Key: tc.key, Value: bytes.Repeat([]byte{0xfe}, tc.value)}}
		b, err := EncodeHeaders(hs)
		if err != nil {
			t.Fatal(err)
		}
		m := txmsg.Message{Topic: "t", Value: []byte("v"), Headers: hs}
		fits := len(b) <= txmsg.MaxHeadersBytes
		if err := m.Validate(txmsg.DefaultMaxValueBytes); (err == nil) != fits {
			t.Errorf("headers %q of %d bytes encode to %d bytes, but Validate says %v", tc.key, tc.value, len(b), err)
		}
	}
}
