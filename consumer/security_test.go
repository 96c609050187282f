package consumer

import (
	"context"
	"crypto/tls"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/testenv"
)

// TestSecurityConsumerTLSAndSASL: with WithTLS and WithSASL the consumer
// reads a Kafka that requires both, and writes to its retry tier there too.
func TestSecurityConsumerTLSAndSASL(t *testing.T) {
	t.Parallel()
	const user, pass, topic, group = "app", "app-pw", "secure", "g"
	ca := testenv.NewTLS(t)
	k := testenv.NewKafka(t, 1, kfake.TLS(ca.Server), kfake.EnableSASL(), kfake.Superuser(kafkax.MechanismScramSHA256, user, pass))
	mech, err := scram.Mechanism(scram.SHA256, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
	sec := kafkax.Security{TLS: tc, SASL: mech}
	tr := kafkax.NewTransport(sec)
	defer tr.CloseIdleConnections()
	w, err := kafkax.NewWriter(k.Addrs, kafkax.WriterConfig{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 4
	for i := range n {
		if err := w.WriteMessages(ctx, record(topic, "k", "id-"+strconv.Itoa(i), strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	c, err := New(k.Addrs, group, []string{topic}, fastGroup(), WithTLS(tc), WithSASL(mech),
		WithMaxAttempts(1), WithRetryTiers(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	start(t, c, HandlerFunc(func(_ context.Context, m Message) error {
		mu.Lock()
		defer mu.Unlock()
		seen[string(m.Value)]++
		if string(m.Value) == "0" && seen["0"] == 1 {
			return errBoom // to the retry tier, through the secured writer
		}
		return nil
	}))
	testenv.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != n || seen["0"] != 2 {
			return fmt.Errorf("handled %v", seen)
		}
		return nil
	})
	d := &kafka.Dialer{Timeout: 10 * time.Second, TLS: tc, SASLMechanism: mech}
	recs, err := testenv.RecordsVia(ctx, d, k.Addrs, topic+"."+group+".retry-1")
	if err != nil || len(recs) != 1 {
		t.Fatalf("retry tier: %d records, %v", len(recs), err)
	}
}

func TestSecurityConsumerOptions(t *testing.T) {
	t.Parallel()
	if _, err := New([]string{"127.0.0.1:9092"}, "g", []string{"t"}, WithTLS(nil)); err == nil {
		t.Error("WithTLS(nil) accepted")
	}
	if _, err := New([]string{"127.0.0.1:9092"}, "g", []string{"t"}, WithSASL(nil)); err == nil {
		t.Error("WithSASL(nil) accepted")
	}
}
