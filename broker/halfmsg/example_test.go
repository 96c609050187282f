package halfmsg_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
)

// Errors answered by the broker match txmsg's sentinels over HTTP.
func ExampleAPIError() {
	var err error = &halfmsg.APIError{Status: 409, Code: halfmsg.CodeConflict, Message: "message is rolled_back"}
	fmt.Println(errors.Is(err, txmsg.ErrConflict), errors.Is(err, txmsg.ErrNotFound))
	// Output: true false
}

func ExampleParseState() {
	st, err := halfmsg.ParseState("discarded")
	fmt.Println(st, uint8(st), err)
	// Output: discarded 5 <nil>
}

// A service sends a half message whose fate follows its local transaction,
// and serves the ledger as its check-back endpoint.
func ExampleProducer_SendInTransaction() {
	ctx := context.Background()
	db, err := sql.Open("mysql", "app@tcp(127.0.0.1:3306)/shop?parseTime=true")
	if err != nil {
		log.Fatal(err)
	}
	// The operator registered the group (txmsg group create shop --url
	// http://shop.internal:8080/txmsg/checkback), which printed its token and
	// secret; the service reads them from its environment.
	client, err := halfmsg.NewClient("http://127.0.0.1:7070", halfmsg.WithToken(os.Getenv("SHOP_TXMSG_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	// Commit calls go to the broker in the background; one that fails is
	// reported here, and check-back delivers the message anyway.
	producer, err := halfmsg.NewProducer(client, "shop", db, halfmsg.WithProducerSecret(os.Getenv("SHOP_TXMSG_SECRET")),
		halfmsg.WithProducerOnEndError(func(e *halfmsg.EndError) {
			slog.Warn("half message end call failed; check-back will resolve it", "msg_id", e.ID, "error", e.Err)
		}))
	if err != nil {
		log.Fatal(err)
	}
	// At shutdown, wait up to 5 s for the commit calls still in flight.
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := producer.Close(ctx); err != nil {
			log.Printf("half-message producer: %v", err)
		}
	}()
	// The broker asks here about messages whose commit call was lost; the
	// handler refuses requests the group's secret did not sign.
	http.Handle("/txmsg/checkback", producer.CheckbackHandler())
	msg := txmsg.Message{Topic: "orders", Key: []byte("order-17"), Value: []byte(`{"id":17}`)}
	err = producer.SendInTransaction(ctx, msg, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO orders (id, total) VALUES (?, ?)`, 17, 4200)
		return err
	})
	if err != nil {
		log.Printf("order 17: %v", err)
	}
}
