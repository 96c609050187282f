package chaos

import (
	"context"
	"fmt"
)

// deleteTopic deletes the doomed topic, which the relays write to and the
// consumers do not read; kfake creates it again on the next write. What it
// held is read first and kept as evidence: while it is read and deleted,
// produce requests to it are refused (retriably), so that every record
// Kafka acknowledged is in the snapshot or in the new topic.
func (s *soak) deleteTopic(ctx context.Context) (string, error) {
	topic := s.kafka.gatedTopic
	if !s.kafka.hasTopic(topic) {
		return topic + " not created yet", nil
	}
	s.kafka.gate.Store(true)
	defer s.kafka.gate.Store(false)
	recs, err := readTopic(ctx, s.kafka.addr, topic)
	if err != nil {
		return "", fmt.Errorf("snapshot before deleting %s: %w", topic, err)
	}
	if err := s.kafka.kfake.DeleteTopic(topic); err != nil {
		return "", fmt.Errorf("delete %s: %w", topic, err)
	}
	s.mu.Lock()
	s.deleted = append(s.deleted, recs...)
	s.mu.Unlock()
	return fmt.Sprintf("%s deleted with %d records", topic, len(recs)), nil
}
