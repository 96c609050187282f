package consumer_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/consumer"
)

// Both handler kinds: an at-least-once HandlerFunc, and a TxHandlerFunc
// whose effects commit once thanks to the inbox.
func ExampleConsumer_Run() {
	var db *sql.DB // opened with the MySQL driver; migrations applied
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	c, err := consumer.New([]string{"127.0.0.1:9092"}, "billing", []string{"orders"},
		consumer.WithInbox(db), consumer.WithConcurrency(8), consumer.WithMaxAttempts(5))
	if err != nil {
		log.Fatal(err)
	}
	// Effectively once: the insert and the inbox row commit together.
	err = c.Run(ctx, consumer.TxHandlerFunc(func(ctx context.Context, tx *sql.Tx, m consumer.Message) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO invoices (order_id, body) VALUES (?, ?)", m.Key, m.Value)
		return err
	}))
	if err != nil {
		log.Fatal(err)
	}

	// At least once: the handler must be idempotent.
	_ = c.Run(ctx, consumer.HandlerFunc(func(ctx context.Context, m consumer.Message) error {
		if len(m.Value) == 0 {
			return consumer.Permanent(fmt.Errorf("order %s: empty body", m.ID))
		}
		return nil
	}))
}

// A strategy chosen by name, as in a configuration file, assigning six
// partitions to three members.
func ExampleBalancerByName() {
	var members []kafka.GroupMember
	var leader kafka.GroupBalancer
	for _, name := range []string{"a", "b", "c"} {
		b, err := consumer.BalancerByName("round-robin", consumer.BalancerConfig{Member: name})
		if err != nil {
			log.Fatal(err)
		}
		meta, err := b.UserData()
		if err != nil {
			log.Fatal(err)
		}
		members = append(members, kafka.GroupMember{ID: "member-" + name, Topics: []string{"orders"}, UserData: meta})
		leader = b
	}
	var partitions []kafka.Partition
	for p := 0; p < 6; p++ {
		partitions = append(partitions, kafka.Partition{Topic: "orders", ID: p})
	}
	got := leader.AssignGroups(members, partitions)
	for _, id := range []string{"member-a", "member-b", "member-c"} {
		fmt.Println(id, got[id]["orders"])
	}
	_, err := consumer.BalancerByName("sticky", consumer.BalancerConfig{})
	fmt.Println(err)
	// Output:
	// member-a [0 3]
	// member-b [1 4]
	// member-c [2 5]
	// consumer: unknown allocation strategy "sticky"; want one of average, round-robin, consistent-hash, static, rack
}
