package kafkax

import (
	"testing"

	"github.com/segmentio/kafka-go"
)

func TestKafkaxNewGroupReader(t *testing.T) {
	t.Parallel()
	bad := []struct {
		name    string
		brokers []string
		c       ReaderConfig
	}{
		{"no brokers", nil, ReaderConfig{Group: "g", Topics: []string{"t"}}},
		{"no group", []string{"127.0.0.1:9092"}, ReaderConfig{Topics: []string{"t"}}},
		{"no topics", []string{"127.0.0.1:9092"}, ReaderConfig{Group: "g"}},
		{"empty topic", []string{"127.0.0.1:9092"}, ReaderConfig{Group: "g", Topics: []string{""}}},
	}
	for _, tc := range bad {
		if r, err := NewGroupReader(tc.brokers, tc.c); err == nil {
			r.Close()
			t.Errorf("%s: NewGroupReader succeeded", tc.name)
		}
	}
	r, err := NewGroupReader([]string{"127.0.0.1:9092"}, ReaderConfig{Group: "g", Topics: []string{"t"},
		Balancers: []kafka.GroupBalancer{kafka.RoundRobinGroupBalancer{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cfg := r.Config()
	if cfg.CommitInterval != 0 || cfg.StartOffset != kafka.FirstOffset || cfg.GroupID != "g" {
		t.Fatalf("unsafe reader config: commit interval %v, start offset %d, group %q", cfg.CommitInterval, cfg.StartOffset, cfg.GroupID)
	}
	if len(cfg.GroupBalancers) != 1 || cfg.GroupBalancers[0].ProtocolName() != "roundrobin" {
		t.Fatalf("balancers %v", cfg.GroupBalancers)
	}
}

func TestKafkaxNewConsumerGroupAndPartitionReader(t *testing.T) {
	t.Parallel()
	if cg, err := NewConsumerGroup([]string{"127.0.0.1:9092"}, ReaderConfig{Topics: []string{"t"}}); err == nil {
		cg.Close()
		t.Error("NewConsumerGroup without a group succeeded")
	}
	if r, err := NewPartitionReader([]string{"127.0.0.1:9092"}, "", 0, kafka.FirstOffset, ReaderConfig{}); err == nil {
		r.Close()
		t.Error("NewPartitionReader without a topic succeeded")
	}
	r, err := NewPartitionReader([]string{"127.0.0.1:9092"}, "t", 2, 42, ReaderConfig{QueueCapacity: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cfg := r.Config()
	if cfg.GroupID != "" || cfg.Partition != 2 || cfg.QueueCapacity != 7 || cfg.IsolationLevel != kafka.ReadCommitted || r.Offset() != 42 {
		t.Fatalf("reader config %+v at offset %d", cfg, r.Offset())
	}
}
