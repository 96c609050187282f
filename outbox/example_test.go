package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"strings"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/outbox"
)

// printExec stands in for the caller's *sql.Tx: it prints what Publish
// sends to the database.
type printExec struct{}

func (printExec) ExecContext(_ context.Context, query string, args ...any) (sql.Result, error) {
	fmt.Printf("%d rows, %d arguments, one statement: %s\n", strings.Count(query, "(?,"), len(args), query[:strings.Index(query, " (")])
	return nil, nil
}

// Publish writes every message in one INSERT through the caller's
// transaction (a *sql.Tx in a real service); an invalid message writes
// nothing.
func ExamplePublisher_Publish() {
	pub, err := outbox.NewPublisher(outbox.WithShards(16))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	var tx outbox.Execer = printExec{} // tx, _ := db.BeginTx(ctx, nil)
	err = pub.Publish(ctx, tx,
		txmsg.Message{Topic: "orders", Key: []byte("order-17"), Value: []byte(`{"id":17,"status":"placed"}`)},
		txmsg.Message{Topic: "orders", Key: []byte("order-17"), Value: []byte(`{"id":17,"status":"paid"}`)})
	fmt.Println(err)
	err = pub.Publish(ctx, tx, txmsg.Message{Topic: "orders"})
	fmt.Println(errors.Is(err, txmsg.ErrInvalidMessage), err)
	// Output:
	// 2 rows, 12 arguments, one statement: INSERT INTO txmsg_outbox
	// <nil>
	// true outbox: message 0 (topic "orders"): txmsg: invalid message: value is empty
}
