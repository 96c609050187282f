package halfmsg

import (
	"fmt"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/txmsg/txmsg"
)

// Limits of the API's fields.
const (
	// MaxGroupLen is the longest producer group name.
	MaxGroupLen = 128
	// MaxURLLen is the longest check-back URL.
	MaxURLLen = 2048
	// DefaultListLimit and MaxListLimit bound a List page.
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// PrepareRequest is one half message to prepare.
type PrepareRequest struct {
	// ProducerGroup names the producer; the check-back URL registered for
	// it is asked unless CheckbackURL is set. Required.
	ProducerGroup string
	// Message is the message; an empty ID gets a UUIDv7.
	Message txmsg.Message
	// CheckbackURL overrides the group's check-back URL for this message.
	CheckbackURL string
	// CheckTimeout overrides the delay before the first check (0: the
	// store's default).
	CheckTimeout time.Duration
	// MaxChecks overrides the number of checks (0: the store's default).
	MaxChecks int
}

// Info is what the store knows about one half message.
type Info struct {
	ID              string
	ProducerGroup   string
	Topic           string
	Key             []byte
	State           State
	CheckbackURL    string
	CheckTimeout    time.Duration
	MaxChecks       int
	CheckCount      int
	LastCheckResult string
	LastCheckError  string
	// Reason says why a message was discarded or resolved by an operator.
	Reason string
	// Attempts and LastError count deliveries Kafka refused.
	Attempts  int
	LastError string
	CreatedAt time.Time
	UpdatedAt time.Time
	// The times below are zero when they have not happened.
	NextCheckAt time.Time
	LastCheckAt time.Time
	ResolvedAt  time.Time
	DeliveredAt time.Time
	// Seq is the message's position in the table (the List cursor).
	Seq int64
}

// ValidateGroup checks a producer group name: 1 to 128 bytes of UTF-8.
func ValidateGroup(g string) error {
	if g == "" || len(g) > MaxGroupLen || !utf8.ValidString(g) {
		return fmt.Errorf("%w: producer_group must be 1 to %d bytes of UTF-8", txmsg.ErrInvalidMessage, MaxGroupLen)
	}
	return nil
}

// ValidateCheckbackURL checks a check-back URL: absolute http or https,
// without credentials (the broker signs its requests instead). The broker
// also checks where the URL leads: see broker.AddressPolicy.
func ValidateCheckbackURL(raw string) error {
	if len(raw) > MaxURLLen {
		return fmt.Errorf("%w: checkback_url is longer than %d bytes", txmsg.ErrInvalidMessage, MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: checkback_url %q: want an absolute http or https URL", txmsg.ErrInvalidMessage, raw)
	}
	if u.User != nil {
		// Not quoted back: the URL holds a password.
		return fmt.Errorf("%w: checkback_url: credentials in the URL are refused; check-backs are signed with the group's secret instead",
			txmsg.ErrInvalidMessage)
	}
	return nil
}

// Filter selects messages for List. Zero fields match everything.
type Filter struct {
	State         State
	ProducerGroup string
	// After is the cursor: only messages with a larger Seq.
	After int64
	// Limit is the page size (default 100, at most 1000).
	Limit int
}
