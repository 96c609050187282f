// Package codec encodes message headers for the BLOB columns of txmsg's tables.
package codec

import (
	"encoding/json"
	"fmt"

	"github.com/txmsg/txmsg"
)

type header struct {
	K string `json:"k"`
	V []byte `json:"v"`
}

// EncodeHeaders renders headers as JSON (values base64), or nil for none, so
// an operator can read them with SQL.
func EncodeHeaders(hs []txmsg.Header) ([]byte, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	out := make([]header, len(hs))
	for i, h := range hs {
		out[i] = header{K: h.Key, V: h.Value}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode headers: %w", err)
	}
	return b, nil
}

// DecodeHeaders parses what EncodeHeaders wrote.
func DecodeHeaders(b []byte) ([]txmsg.Header, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var in []header
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("decode headers: %w", err)
	}
	out := make([]txmsg.Header, len(in))
	for i, h := range in {
		out[i] = txmsg.Header{Key: h.K, Value: h.V}
	}
	return out, nil
}
