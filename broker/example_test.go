package broker_test

import (
	"errors"
	"fmt"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker"
)

// Errors answered by the broker match txmsg's sentinels over HTTP.
func ExampleAPIError() {
	var err error = &broker.APIError{Status: 409, Code: broker.CodeConflict, Message: "message is rolled_back"}
	fmt.Println(errors.Is(err, txmsg.ErrConflict), errors.Is(err, txmsg.ErrNotFound))
	// Output: true false
}

func ExampleParseState() {
	st, err := broker.ParseState("discarded")
	fmt.Println(st, uint8(st), err)
	// Output: discarded 5 <nil>
}
