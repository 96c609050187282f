package consumer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/testenv"
)

// TestConsumerGroupWaitsForACoordinatorWaitingOutADeadMember: the group
// holds a member that died without leaving, whose rebalance timeout (12s)
// is longer than the others'. A member that joins waits for the
// coordinator to give up on the dead one: 12s, longer than kafka-go waits
// for a join by default (its 5s timeout plus the rebalance timeout, 6s
// here). A member that gave up on its join would leave an abandoned member
// behind and join again as a new one, and the group could take minutes to
// settle; the members wait instead, and consume.
func TestConsumerGroupWaitsForACoordinatorWaitingOutADeadMember(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	k := testenv.NewKafka(t, 4)
	createEffectsTable(t, db)
	const topic, group = "ledger", "auditors"
	var msgs []kafka.Message
	for i := range 80 {
		msgs = append(msgs, record(topic, "k"+strconv.Itoa(i%8), fmt.Sprintf("m-%d", i), strconv.Itoa(i/8)))
	}
	produce(t, k.Addrs, msgs...)
	joinDeadMember(t, k.Addrs, group, topic, 12*time.Second)

	var log testenv.LogBuffer
	h := TxHandlerFunc(func(ctx context.Context, tx *sql.Tx, m Message) error { return insertEffect(ctx, tx, m) })
	for range 2 {
		c, err := New(k.Addrs, group, []string{topic}, WithInbox(db), fastGroup(), WithCommitInterval(50*time.Millisecond),
			WithLogger(slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))))
		if err != nil {
			t.Fatal(err)
		}
		start(t, c, h)
	}
	testenv.Eventually(t, 60*time.Second, func() error { return checkEffects(db, len(msgs)) })
	if s := log.String(); strings.Contains(s, "join group") {
		t.Fatalf("a member gave up on a join:\n%s", s)
	}
}

// joinDeadMember makes a member join group (reading topic, with the given
// session and rebalance timeout), take no partition and then fall silent, as
// a process killed without leaving does.
func joinDeadMember(t *testing.T, addrs []string, group, topic string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(addrs...), Timeout: 30 * time.Second}
	req := &kafka.JoinGroupRequest{GroupID: group, SessionTimeout: timeout, RebalanceTimeout: timeout, ProtocolType: "consumer",
		Protocols: []kafka.GroupProtocol{{Name: kafka.RangeGroupBalancer{}.ProtocolName(),
			Metadata: kafka.GroupProtocolSubscription{Topics: []string{topic}}}}}
	join, err := cl.JoinGroup(ctx, req)
	if err == nil && errors.Is(join.Error, kafka.MemberIDRequired) {
		req.MemberID = join.MemberID
		join, err = cl.JoinGroup(ctx, req)
	}
	if err == nil {
		err = join.Error
	}
	if err != nil {
		t.Fatalf("the member to die: join %s: %v", group, err)
	}
	sync, err := cl.SyncGroup(ctx, &kafka.SyncGroupRequest{GroupID: group, GenerationID: join.GenerationID, MemberID: join.MemberID,
		ProtocolType: "consumer", ProtocolName: join.ProtocolName,
		Assignments: []kafka.SyncGroupRequestAssignment{{MemberID: join.MemberID}}})
	if err == nil {
		err = sync.Error
	}
	if err != nil {
		t.Fatalf("the member to die: sync %s: %v", group, err)
	}
}
