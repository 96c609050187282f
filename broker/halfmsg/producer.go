package halfmsg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/checkback"
)

// Producer sends half messages whose fate follows a local transaction: it
// prepares the message while the transaction runs with a check-back ledger
// row, commits the transaction once the prepare is acknowledged, then
// commits or rolls the message back, in the background by default. Mount
// p.CheckbackHandler() at the group's check-back URL so the broker can ask
// about messages whose commit call was lost. Close it to wait for the
// background calls. It is safe for concurrent use.
type Producer struct {
	client    *Client
	group     string
	db        *sql.DB
	ledger    *checkback.Ledger
	url       string
	secrets   []string
	timeout   time.Duration
	maxChecks int
	syncEnd   bool
	ids       *idGen
	ends      *endSender
}

// ProducerOption configures a Producer.
type ProducerOption func(*producerOptions)

type producerOptions struct {
	url        string
	secrets    []string
	timeout    time.Duration
	maxChecks  int
	syncEnd    bool
	maxPending int
	onEndError func(*EndError)
	pendingSet bool
	onErrorSet bool
	ledger     []checkback.LedgerOption
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

// WithProducerSyncEnd makes SendInTransaction call the broker's commit (or
// rollback) itself and return that call's error, as the prepare's. Default:
// asynchronous: the call is made in the background once the local
// transaction's outcome is durable in the ledger, SendInTransaction returns
// without waiting for it, and a call that fails after brief retries goes to
// WithProducerOnEndError while check-back resolves the message (delivery
// then waits for the check-back: the group's check timeout at least).
func WithProducerSyncEnd() ProducerOption {
	return func(o *producerOptions) { o.syncEnd = true }
}

// WithProducerMaxPendingEnds bounds the commit and rollback calls in flight
// in the background (default DefaultMaxPendingEnds, 64; at least 1). When
// all are taken, SendInTransaction makes the call itself, synchronously, and
// returns its error: a broker that falls behind slows the producers down
// instead of leaving their messages to check-back, which would delay them
// by the check timeout and, in OrderPrepare, hold back the later messages of
// their keys.
func WithProducerMaxPendingEnds(n int) ProducerOption {
	return func(o *producerOptions) { o.maxPending, o.pendingSet = n, true }
}

// WithProducerOnEndError sets the function told about every commit or
// rollback call made in the background that failed after its retries, or
// that Close abandoned. It is called from the background goroutine, may be
// called concurrently, and should return quickly. Default: a warning on
// slog.Default() (attributes msg_id, action, attempt, error), so that no
// such error is lost silently.
func WithProducerOnEndError(fn func(*EndError)) ProducerOption {
	return func(o *producerOptions) { o.onEndError, o.onErrorSet = fn, true }
}

// WithProducerLedgerOptions configures the producer's ledger (see
// checkback.LedgerChecker), e.g. checkback.WithoutBatchMarkers behind a
// proxy that cannot parse SET STATEMENT.
func WithProducerLedgerOptions(opts ...checkback.LedgerOption) ProducerOption {
	return func(o *producerOptions) { o.ledger = append(o.ledger, opts...) }
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
	if !o.pendingSet {
		o.maxPending = DefaultMaxPendingEnds
	}
	if o.maxPending < 1 {
		return nil, fmt.Errorf("halfmsg: producer: max pending ends %d: want at least 1 (WithProducerSyncEnd makes every call synchronous)", o.maxPending)
	}
	if o.onErrorSet && o.onEndError == nil {
		return nil, errors.New("halfmsg: producer: nil end-error function")
	}
	if o.onEndError == nil {
		o.onEndError = logEndError
	}
	ledger, err := checkback.LedgerChecker(db, o.ledger...)
	if err != nil {
		return nil, fmt.Errorf("halfmsg: producer: %w", err)
	}
	p := &Producer{client: client, group: group, db: db, ledger: ledger, url: o.url, secrets: o.secrets,
		timeout: o.timeout, maxChecks: o.maxChecks, syncEnd: o.syncEnd, ids: &idGen{now: time.Now}}
	p.ends = newEndSender(o.maxPending, o.onEndError, p.endCall)
	return p, nil
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

// SendInTransaction sends msg if and only if fn's transaction commits:
//
//  1. give msg a UUIDv7 if its ID is empty (the format the broker would
//     use), and check it as the broker will: an invalid message fails here,
//     before anything runs, with txmsg.ErrInvalidMessage;
//  2. send the prepare, and while it is in flight begin a transaction on
//     the producer's db, write the ledger row and run fn;
//  3. if the prepare fails, roll the transaction back and return the
//     prepare's error (joined with fn's, if fn failed too): fn may have run,
//     but nothing of it commits;
//  4. if the transaction failed (fn, or the ledger row), roll it and the
//     message back and return the error (fn's error first);
//  5. commit the transaction, only now that the broker has acknowledged the
//     prepare (the message is durable, so no committed transaction is ever
//     without its message); an error there leaves the outcome to check-back
//     (the ledger row answers it) and is returned;
//  6. commit the message at the broker.
//
// The message's end (the commit of step 6, the rollback of step 4) is sent
// in the background by default and SendInTransaction returns at once: its
// failures go to WithProducerOnEndError, and check-back resolves the message
// from the ledger row, so it is delivered (or dropped) all the same, later.
// With WithProducerSyncEnd, or when WithProducerMaxPendingEnds calls are in
// flight already, or after Close, the end is sent before returning and its
// error is returned.
//
// No error is swallowed. If a check-back answered rollback before the ledger
// row could be written (a very slow step 2), the error wraps
// checkback.ErrAlreadyDecided and nothing is committed.
func (p *Producer) SendInTransaction(ctx context.Context, msg txmsg.Message, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if fn == nil {
		return errors.New("halfmsg: producer: nil transaction function")
	}
	if err := checkMessage(&msg); err != nil {
		return fmt.Errorf("halfmsg: producer: prepare: %w", err)
	}
	if msg.ID == "" {
		msg.ID = p.ids.next()
	}
	id := msg.ID
	prepared := p.startPrepare(ctx, msg)
	tx, lerr := p.local(ctx, id, fn)
	if perr := prepared(); perr != nil {
		var rerr error
		if tx != nil {
			rerr = rollbackTx(tx)
		}
		return errors.Join(fmt.Errorf("halfmsg: producer: prepare %s: %w", id, perr), lerr, rerr)
	}
	if lerr != nil {
		return p.end(ctx, id, false, lerr)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("halfmsg: producer: commit local transaction of %s (outcome left to check-back): %w", id, err)
	}
	return p.end(ctx, id, true, nil)
}

// checkMessage refuses, before the transaction runs, what the broker would
// refuse whatever its configuration (it alone knows its value limit).
func checkMessage(m *txmsg.Message) error {
	if err := m.Validate(math.MaxInt); err != nil {
		return err
	}
	return checkWireHeaders(m.Headers)
}

// startPrepare sends the prepare of msg in a goroutine and returns the
// function that waits for its answer; the caller must call it on every
// path, which ends the goroutine.
func (p *Producer) startPrepare(ctx context.Context, msg txmsg.Message) func() error {
	var (
		wg  sync.WaitGroup
		err error
	)
	wg.Go(func() {
		_, err = p.client.Prepare(ctx, PrepareRequest{ProducerGroup: p.group, Message: msg,
			CheckbackURL: p.url, CheckTimeout: p.timeout, MaxChecks: p.maxChecks})
	})
	return func() error {
		wg.Wait()
		return err
	}
}

// local begins the local transaction of id, writes its ledger row and runs
// fn. It returns the open transaction, or the error with the transaction
// rolled back.
func (p *Producer) local(ctx context.Context, id string, fn func(ctx context.Context, tx *sql.Tx) error) (*sql.Tx, error) {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("halfmsg: producer: begin local transaction of %s: %w", id, err)
	}
	if err := p.ledger.Record(ctx, tx, id); err != nil {
		return nil, errors.Join(fmt.Errorf("halfmsg: producer: %w", err), rollbackTx(tx))
	}
	if err := fn(ctx, tx); err != nil {
		return nil, errors.Join(err, rollbackTx(tx))
	}
	return tx, nil
}

// end commits (or, after cause, rolls back) message id at the broker: in
// the background if it can, else at once. It returns cause joined with the
// error of a call made at once.
func (p *Producer) end(ctx context.Context, id string, commit bool, cause error) error {
	if !p.syncEnd && p.ends.start(ctx, id, commit) {
		return cause
	}
	if commit {
		if err := p.endCall(ctx, id, true); err != nil {
			return fmt.Errorf("halfmsg: producer: commit message %s (local transaction committed; check-back will deliver it): %w", id, err)
		}
		return nil
	}
	// Made even when ctx has ended, so the broker need not wait for
	// check-back.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endCallTimeout)
	defer cancel()
	if err := p.endCall(rctx, id, false); err != nil {
		return errors.Join(cause, fmt.Errorf("halfmsg: producer: roll back message %s (check-back will): %w", id, err))
	}
	return cause
}

// endCall makes one commit or rollback call.
func (p *Producer) endCall(ctx context.Context, id string, commit bool) error {
	var err error
	if commit {
		_, err = p.client.Commit(ctx, id)
	} else {
		_, err = p.client.Rollback(ctx, id)
	}
	return err
}

// Flush waits until the commit and rollback calls that were in flight in the
// background when it was called have returned (succeeded, or failed and
// been reported to WithProducerOnEndError), or ctx ends; it then returns
// ctx's error, and the calls go on. It is safe for concurrent use.
func (p *Producer) Flush(ctx context.Context) error { return p.ends.flush(ctx) }

// Close stops sending ends in the background: SendInTransaction called
// afterwards sends them itself, as with WithProducerSyncEnd. It then waits
// for the calls in flight until ctx ends; those still in flight then are
// cancelled, reported to WithProducerOnEndError, and left to check-back, and
// Close returns ctx's error. Close returns only after every goroutine of the
// producer has returned. It is idempotent; it does not close the Client or
// the db.
func (p *Producer) Close(ctx context.Context) error { return p.ends.close(ctx) }

func rollbackTx(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("halfmsg: producer: roll back local transaction: %w", err)
	}
	return nil
}
