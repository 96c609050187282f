package txmsg_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg"
)

func TestMessageValidate(t *testing.T) {
	ok := txmsg.Message{Topic: "orders.v1_x-y", Key: []byte("k"), Value: []byte("v")}
	tests := []struct {
		name string
		edit func(*txmsg.Message)
		want string
	}{
		{"valid", func(*txmsg.Message) {}, ""},
		{"empty topic", func(m *txmsg.Message) { m.Topic = "" }, "empty topic"},
		{"dot topic", func(m *txmsg.Message) { m.Topic = ".." }, "not allowed"},
		{"bad character", func(m *txmsg.Message) { m.Topic = "orders/eu" }, `character '/'`},
		{"long topic", func(m *txmsg.Message) { m.Topic = strings.Repeat("t", 250) }, "more than 249"},
		{"empty value", func(m *txmsg.Message) { m.Value = nil }, "value is empty"},
		{"value too large", func(m *txmsg.Message) { m.Value = make([]byte, txmsg.DefaultMaxValueBytes) }, "as a Kafka record"},
		// A value Kafka's default limit (1 MiB and 12 bytes) would refuse
		// once key and headers are added; 1,048,476 of value was the most
		// kfake took with a one-byte key.
		{"1 MiB value", func(m *txmsg.Message) { m.Value = make([]byte, 1<<20) }, "as a Kafka record"},
		{"key and headers count", func(m *txmsg.Message) {
			m.Value = make([]byte, txmsg.DefaultMaxValueBytes-2000)
			m.Key = make([]byte, 767)
			m.Headers = []txmsg.Header{{Key: "trace", Value: make([]byte, 1200)}}
		}, "as a Kafka record"},
		{"largest value with defaults", func(m *txmsg.Message) {
			m.Value = make([]byte, txmsg.DefaultMaxValueBytes-txmsg.RecordBytes(m.Key, nil, m.ID, nil))
		}, ""},
		{"header name not UTF-8", func(m *txmsg.Message) { m.Headers = []txmsg.Header{{Key: "a\xff", Value: []byte("x")}} }, "not valid UTF-8"},
		{"long key", func(m *txmsg.Message) { m.Key = make([]byte, 768) }, "key is 768 bytes"},
		{"long id", func(m *txmsg.Message) { m.ID = strings.Repeat("i", 65) }, "id is 65 bytes"},
		{"reserved header", func(m *txmsg.Message) { m.Headers = []txmsg.Header{{Key: txmsg.HeaderID}} }, "reserved"},
		{"unnamed header", func(m *txmsg.Message) { m.Headers = []txmsg.Header{{Value: []byte("x")}} }, "empty name"},
		{"headers too large", func(m *txmsg.Message) {
			m.Headers = []txmsg.Header{{Key: "a", Value: make([]byte, 30000)}, {Key: "b", Value: make([]byte, 20000)}}
		}, "headers take 66703 bytes stored, more than 65535"},
		{"headers at the limit", func(m *txmsg.Message) {
			m.Headers = []txmsg.Header{{Key: "abcdef", Value: make([]byte, 49134)}} // 65535 bytes stored
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ok
			tt.edit(&m)
			err := m.Validate(txmsg.DefaultMaxValueBytes)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, txmsg.ErrInvalidMessage) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want ErrInvalidMessage mentioning %q", err, tt.want)
			}
		})
	}
}

// Shard uses the hash Kafka's Java client and kafka-go's Murmur2Balancer
// use, so txmsg shards and Kafka partitions agree on where a key belongs.
func TestShardMatchesKafkaMurmur2(t *testing.T) {
	b := kafka.Murmur2Balancer{}
	parts := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	for _, key := range []string{"", "a", "ab", "abc", "abcd", "order-42", "ключ", strings.Repeat("x", 101)} {
		want := b.Balance(kafka.Message{Key: []byte(key)}, parts...)
		if got := txmsg.Shard([]byte(key), "id", len(parts)); got != want {
			t.Errorf("Shard(%q) = %d, kafka-go puts it in %d", key, got, want)
		}
	}
	if txmsg.Shard(nil, "a", 16) != txmsg.Shard([]byte("a"), "other", 16) {
		t.Error("a nil key does not shard by id")
	}
	if txmsg.Shard([]byte("k"), "", 1) != 0 {
		t.Error("one shard must be shard 0")
	}
}
