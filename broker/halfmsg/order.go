package halfmsg

import "fmt"

// Order is the order in which the relay delivers the half messages of one
// producer group that share a topic and a key. It is stored as a TINYINT
// with the group.
type Order uint8

// Orders. The zero Order is invalid; a group without a registration
// delivers in OrderPrepare.
const (
	// OrderPrepare (the default): messages of a key are delivered in the
	// order they were prepared. A committed message waits while an earlier
	// message of its producer group, topic and key is still prepared (other
	// groups' messages are not ordered with it), until that one is
	// committed (it is then delivered first), rolled back or discarded. A
	// producer whose commit call is lost therefore holds back the later
	// messages of that key until check-back resolves it: at most the check
	// schedule (check timeout, backoff, max checks).
	OrderPrepare Order = iota + 1
	// OrderCommit: messages are delivered in the order they were committed;
	// no message waits for another. A message whose commit call is lost and
	// that check-back commits later lands after later messages of its key.
	OrderCommit
)

var orderNames = [...]string{
	OrderPrepare: "prepare",
	OrderCommit:  "commit",
}

// Valid reports whether o is one of the defined orders.
func (o Order) Valid() bool { return o == OrderPrepare || o == OrderCommit }

// String returns the order's name as the API and the CLI spell it.
func (o Order) String() string {
	if o.Valid() {
		return orderNames[o]
	}
	return fmt.Sprintf("Order(%d)", uint8(o))
}

// MarshalText implements encoding.TextMarshaler.
func (o Order) MarshalText() ([]byte, error) {
	if !o.Valid() {
		return nil, fmt.Errorf("halfmsg: invalid delivery order %d", uint8(o))
	}
	return []byte(o.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (o *Order) UnmarshalText(b []byte) error {
	p, err := ParseOrder(string(b))
	if err != nil {
		return err
	}
	*o = p
	return nil
}

// ParseOrder parses an order name: "prepare" or "commit".
func ParseOrder(name string) (Order, error) {
	for i := OrderPrepare; i <= OrderCommit; i++ {
		if orderNames[i] == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("halfmsg: unknown delivery order %q: want prepare or commit", name)
}

// GroupOption sets an optional field of a producer group's registration.
type GroupOption func(*Group)

// WithDeliveryOrder sets the group's delivery order (default OrderPrepare).
// It applies to messages committed after the change.
func WithDeliveryOrder(o Order) GroupOption { return func(g *Group) { g.Order = o } }
