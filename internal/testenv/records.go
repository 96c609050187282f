package testenv

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// Records reads every record of topic as it stands now, partition by
// partition, in offset order. A topic that does not exist yet has no records.
func Records(ctx context.Context, addrs []string, topic string) ([]kafka.Message, error) {
	return RecordsVia(ctx, kafka.DefaultDialer, addrs, topic)
}

// RecordsVia is Records through d, which may carry TLS and SASL.
func RecordsVia(ctx context.Context, d *kafka.Dialer, addrs []string, topic string) ([]kafka.Message, error) {
	conn, err := d.DialContext(ctx, "tcp", addrs[0])
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addrs[0], err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topic)
	if err != nil {
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			return nil, nil
		}
		return nil, fmt.Errorf("partitions of %s: %w", topic, err)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].ID < parts[j].ID })
	var out []kafka.Message
	for _, p := range parts {
		msgs, err := readPartition(ctx, d, addrs[0], topic, p.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
	}
	return out, nil
}

func readPartition(ctx context.Context, d *kafka.Dialer, addr, topic string, partition int) ([]kafka.Message, error) {
	pc, err := d.DialLeader(ctx, "tcp", addr, topic, partition)
	if err != nil {
		return nil, fmt.Errorf("dial leader of %s/%d: %w", topic, partition, err)
	}
	defer pc.Close()
	first, last, err := pc.ReadOffsets()
	if err != nil {
		return nil, fmt.Errorf("offsets of %s/%d: %w", topic, partition, err)
	}
	var out []kafka.Message
	offset := first
	for offset < last {
		if _, err := pc.Seek(offset, kafka.SeekAbsolute); err != nil {
			return nil, fmt.Errorf("seek %s/%d@%d: %w", topic, partition, offset, err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		batch := pc.ReadBatch(1, 64<<20)
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			m.Partition = partition
			out = append(out, m)
			offset = m.Offset + 1
		}
		if err := batch.Close(); err != nil && offset < last {
			return nil, fmt.Errorf("read %s/%d@%d: %w", topic, partition, offset, err)
		}
	}
	return out, nil
}

// HeaderValue returns the value of the header named key on m.
func HeaderValue(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// WaitRecords waits up to timeout until topic holds n records, and returns
// them; it fails the test with the count last seen.
func WaitRecords(t testing.TB, addrs []string, topic string, n int, timeout time.Duration) []kafka.Message {
	t.Helper()
	var recs []kafka.Message
	Eventually(t, timeout, func() error {
		var err error
		if recs, err = Records(context.Background(), addrs, topic); err != nil {
			return err
		}
		if len(recs) != n {
			return fmt.Errorf("%d records in %s, want %d", len(recs), topic, n)
		}
		return nil
	})
	return recs
}
