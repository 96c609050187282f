package halfmsg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/checkback"
)

// Producer sends half messages whose fate follows a local transaction: it
// prepares the message, runs the transaction with a check-back ledger row,
// then commits or rolls the message back. Mount p.CheckbackHandler() at the
// group's check-back URL so the broker can ask about messages whose commit
// call was lost. It is safe for concurrent use.
type Producer struct {
	client    *Client
	group     string
	db        *sql.DB
	ledger    *checkback.Ledger
	url       string
	secrets   []string
	timeout   time.Duration
	maxChecks int
}

// ProducerOption configures a Producer.
type ProducerOption func(*producerOptions)

type producerOptions struct {
	url       string
	secrets   []string
	timeout   time.Duration
	maxChecks int
}

// WithProducerSecret sets the group's secret, which the broker signs its
// check-backs with (the "secret" of the group's registration);
// CheckbackHandler verifies them with it. Give the new and the old secret
// while a rotation rolls out. Default: none, and CheckbackHandler refuses
// every check-back.
func WithProducerSecret(secrets ...string) ProducerOption {
	return func(o *producerOptions) { o.secrets = append(o.secrets, secrets...) }
}

// WithProducerCheckbackURL sends url as every message's check-back URL
// (default: none; the broker asks the URL registered for the group).
func WithProducerCheckbackURL(url string) ProducerOption {
	return func(o *producerOptions) { o.url = url }
}

// WithProducerCheckTimeout sets every message's delay before the first
// check-back (default: the broker's, 6s).
func WithProducerCheckTimeout(d time.Duration) ProducerOption {
	return func(o *producerOptions) { o.timeout = d }
}

// WithProducerMaxChecks sets every message's number of check-backs (default:
// the broker's, 15).
func WithProducerMaxChecks(n int) ProducerOption {
	return func(o *producerOptions) { o.maxChecks = n }
}

// NewProducer returns a Producer for group that talks to the broker through
// client and runs local transactions on db (which holds the
// txmsg_checkback_ledger table).
func NewProducer(client *Client, group string, db *sql.DB, opts ...ProducerOption) (*Producer, error) {
	if client == nil {
		return nil, errors.New("halfmsg: producer: nil Client")
	}
	if err := ValidateGroup(group); err != nil {
		return nil, fmt.Errorf("halfmsg: producer: %w", err)
	}
	var o producerOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.url != "" {
		if err := ValidateCheckbackURL(o.url); err != nil {
			return nil, fmt.Errorf("halfmsg: producer: %w", err)
		}
	}
	if o.timeout < 0 || o.maxChecks < 0 {
		return nil, errors.New("halfmsg: producer: negative check timeout or max checks")
	}
	ledger, err := checkback.LedgerChecker(db)
	if err != nil {
		return nil, fmt.Errorf("halfmsg: producer: %w", err)
	}
	return &Producer{client: client, group: group, db: db, ledger: ledger, url: o.url, secrets: o.secrets,
		timeout: o.timeout, maxChecks: o.maxChecks}, nil
}

// Ledger returns the producer's ledger, the checkback.Checker that
// CheckbackHandler serves.
func (p *Producer) Ledger() *checkback.Ledger { return p.ledger }

// CheckbackHandler returns the handler to mount at the group's check-back
// URL: checkback.Handler on the ledger, verifying signatures with the
// secret of WithProducerSecret. opts add to (or override) those.
func (p *Producer) CheckbackHandler(opts ...checkback.HandlerOption) http.Handler {
	return checkback.Handler(p.ledger, append([]checkback.HandlerOption{checkback.WithSecret(p.secrets...)}, opts...)...)
}

// rollbackTimeout bounds the rollback call after a failed local transaction,
// made even when ctx has ended so the broker need not wait for check-back.
const rollbackTimeout = 5 * time.Second

// SendInTransaction sends msg if and only if fn's transaction commits:
//
//  1. prepare msg at the broker (an empty ID gets a UUIDv7 there);
//  2. begin a transaction on the producer's db, write the ledger row, run fn;
//  3. if either fails, roll the transaction and the message back and return
//     the error (fn's error first, joined with any rollback error);
//  4. commit the transaction; an error there leaves the outcome to
//     check-back (the ledger row answers it) and is returned;
//  5. commit the message; an error there is returned too, and check-back
//     will deliver the message later because the ledger row is committed.
//
// No error is swallowed. If a check-back answered rollback before the ledger
// row could be written (a very slow step 2), the error wraps
// checkback.ErrAlreadyDecided and nothing is committed.
func (p *Producer) SendInTransaction(ctx context.Context, msg txmsg.Message, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if fn == nil {
		return errors.New("halfmsg: producer: nil transaction function")
	}
	id, err := p.client.Prepare(ctx, PrepareRequest{ProducerGroup: p.group, Message: msg,
		CheckbackURL: p.url, CheckTimeout: p.timeout, MaxChecks: p.maxChecks})
	if err != nil {
		return fmt.Errorf("halfmsg: producer: prepare: %w", err)
	}
	abort := func(cause error) error {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		if _, err := p.client.Rollback(rctx, id); err != nil {
			return errors.Join(cause, fmt.Errorf("halfmsg: producer: roll back message %s (check-back will): %w", id, err))
		}
		return cause
	}
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return abort(fmt.Errorf("halfmsg: producer: begin local transaction of %s: %w", id, err))
	}
	if err := p.ledger.Record(ctx, tx, id); err != nil {
		return abort(errors.Join(fmt.Errorf("halfmsg: producer: %w", err), rollbackTx(tx)))
	}
	if err := fn(ctx, tx); err != nil {
		return abort(errors.Join(err, rollbackTx(tx)))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("halfmsg: producer: commit local transaction of %s (outcome left to check-back): %w", id, err)
	}
	if _, err := p.client.Commit(ctx, id); err != nil {
		return fmt.Errorf("halfmsg: producer: commit message %s (local transaction committed; check-back will deliver it): %w", id, err)
	}
	return nil
}

func rollbackTx(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("halfmsg: producer: roll back local transaction: %w", err)
	}
	return nil
}
