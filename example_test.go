package txmsg_test

import (
	"errors"
	"fmt"

	"github.com/txmsg/txmsg"
)

// Messages of one key share a shard, so one relay delivers them in order;
// the hash is Kafka's murmur2, as Java producers and kafka-go use.
func ExampleShard() {
	fmt.Println(txmsg.Shard([]byte("order-17"), "", 16) == txmsg.Shard([]byte("order-17"), "other-id", 16))
	fmt.Println(txmsg.Shard(nil, "id-1", 1))
	// Output:
	// true
	// 0
}

// Validate names the rule a message breaks; the error wraps
// ErrInvalidMessage.
func ExampleMessage_Validate() {
	m := txmsg.Message{Topic: "orders", Value: []byte(`{"id":17}`),
		Headers: []txmsg.Header{{Key: txmsg.HeaderID, Value: []byte("x")}}}
	err := m.Validate(txmsg.DefaultMaxValueBytes)
	fmt.Println(err)
	fmt.Println(errors.Is(err, txmsg.ErrInvalidMessage))
	// Output:
	// txmsg: invalid message: header "txmsg-id" is reserved for txmsg
	// true
}
