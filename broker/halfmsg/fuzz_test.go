package halfmsg

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzBrokerPrepareBody feeds arbitrary bodies to the prepare decoder: it
// must never panic, and a body it accepts yields a message with a value.
func FuzzBrokerPrepareBody(f *testing.F) {
	for _, s := range []string{
		`{"producer_group":"g","topic":"t","value":"v"}`,
		`{"producer_group":"g","topic":"t","key_base64":"AP8=","value_base64":"AP8=","headers":{"a":"b"},"check_timeout":"2s","max_checks":3}`,
		`{"value":"v","value_base64":"dg=="}`,
		`{"check_timeout":"-1s","value":"v"}`,
		`[`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		var b PrepareBody
		if err := dec.Decode(&b); err != nil {
			return
		}
		req, err := b.Request()
		if err != nil {
			return
		}
		if req.Message.Value == nil || req.CheckTimeout < 0 || req.MaxChecks < 0 {
			t.Fatalf("accepted %q as %+v", data, req)
		}
		// The client's encoding of an accepted request decodes to the same.
		back := NewPrepareBody(req)
		req2, err := back.Request()
		if err != nil || !bytes.Equal(req2.Message.Value, req.Message.Value) || !bytes.Equal(req2.Message.Key, req.Message.Key) {
			t.Fatalf("round trip of %+v: %+v, %v", req, req2, err)
		}
	})
}

// FuzzBrokerState parses arbitrary state names: valid ones round-trip.
func FuzzBrokerState(f *testing.F) {
	for _, s := range []string{"prepared", "committed", "delivered", "rolled_back", "discarded", "dead", "", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseState(s)
		if err != nil {
			return
		}
		b, err := st.MarshalText()
		if err != nil || string(b) != s {
			t.Fatalf("%q round-trips to %q, %v", s, b, err)
		}
	})
}
