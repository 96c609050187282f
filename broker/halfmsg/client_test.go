package halfmsg

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/txmsg/txmsg"
)

// TestBrokerClientRefusesHeadersTheAPIWouldAlter: headers that the API's
// JSON strings cannot carry unchanged (bytes that are not UTF-8, a repeated
// name) fail before anything is sent, instead of reaching Kafka altered;
// text headers still go through as given.
func TestBrokerClientRefusesHeadersTheAPIWouldAlter(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		sent []PrepareBody
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b PrepareBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		sent = append(sent, b)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"m1","state":"prepared"}`))
	}))
	t.Cleanup(srv.Close)
	c, err := NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	prepare := func(hs ...txmsg.Header) error {
		_, err := c.Prepare(context.Background(), PrepareRequest{ProducerGroup: "g",
			Message: txmsg.Message{Topic: "t", Value: []byte("v"), Headers: hs}})
		return err
	}
	for name, hs := range map[string][]txmsg.Header{
		"binary value":  {{Key: "bin", Value: []byte{0xff, 0xfe, 0x00}}},
		"binary name":   {{Key: "\xff", Value: []byte("v")}},
		"repeated name": {{Key: "a", Value: []byte("1")}, {Key: "a", Value: []byte("2")}},
	} {
		if err := prepare(hs...); !errors.Is(err, txmsg.ErrInvalidMessage) {
			t.Errorf("%s: Prepare = %v, want ErrInvalidMessage", name, err)
		}
	}
	mu.Lock()
	n := len(sent)
	mu.Unlock()
	if n != 0 {
		t.Fatalf("%d prepare requests sent with headers the API would alter", n)
	}
	if err := prepare(txmsg.Header{Key: "trace", Value: []byte("t-1")}, txmsg.Header{Key: "empty"}); err != nil {
		t.Fatalf("text headers: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 1 || len(sent[0].Headers) != 2 || sent[0].Headers["trace"] != "t-1" {
		t.Fatalf("sent %+v, want one request with headers trace=t-1 and empty", sent)
	}
}
