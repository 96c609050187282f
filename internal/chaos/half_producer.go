package chaos

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker"
	"github.com/txmsg/txmsg/broker/halfmsg"
)

// dropShare is the share of half messages whose commit calls are all
// dropped before they leave, as a crash between the local commit and the
// call would: the broker learns the outcome from check-back. It is chosen
// per message, not per call, because the producer retries a failed
// background commit call.
const dropShare = 0.05

const insertPayment = `INSERT INTO chaos_payments (msg_id, topic, msg_key, n, created_at) VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6))`

// halfProducer writes a payment row in the local transaction of a half
// message (halfmsg.Producer.SendInTransaction), through every broker in
// turn, with its group's token, and serves the check-back ledger on
// loopback, verifying the broker's signature.
type halfProducer struct {
	db        *sql.DB
	run       string
	rate      float64
	workers   int
	topic     string
	producers []*halfmsg.Producer // one per broker
	dropped   atomic.Int64        // messages whose commit calls were dropped
	drops     sync.Map            // their ids
	// endFailed counts commit and rollback calls sent in the background
	// that failed for good (dropped ones included): check-back resolves them.
	endFailed atomic.Int64
	stats     producerStats
	server    *http.Server
	serveWG   sync.WaitGroup
}

// newHalfProducer registers the producer group "chaos" in the database (as
// `txmsg group create` does), builds a producer per broker API address with
// the group's token and secret, and starts the check-back server; close
// stops it.
func newHalfProducer(ctx context.Context, db *sql.DB, brokerAt []string, run, topic string, perSecond float64) (*halfProducer, error) {
	h := &halfProducer{db: db, run: run, rate: perSecond, workers: 2, topic: topic}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chaos: listen for check-backs: %w", err)
	}
	url := "http://" + ln.Addr().String() + "/checkback"
	g, err := registerGroup(ctx, db, url)
	if err != nil {
		return nil, errors.Join(err, ln.Close())
	}
	for _, addr := range brokerAt {
		hc := &http.Client{Timeout: 10 * time.Second, Transport: dropCommits{next: http.DefaultTransport, h: h}}
		c, err := halfmsg.NewClient("http://"+addr, halfmsg.WithHTTPClient(hc), halfmsg.WithToken(g.Token))
		if err != nil {
			return nil, errors.Join(err, ln.Close())
		}
		p, err := halfmsg.NewProducer(c, g.Name, db, halfmsg.WithProducerCheckbackURL(url),
			halfmsg.WithProducerCheckTimeout(2*time.Second), halfmsg.WithProducerSecret(g.Secret),
			halfmsg.WithProducerOnEndError(func(*halfmsg.EndError) { h.endFailed.Add(1) }))
		if err != nil {
			return nil, errors.Join(err, ln.Close())
		}
		h.producers = append(h.producers, p)
	}
	mux := http.NewServeMux()
	mux.Handle("/checkback", h.producers[0].CheckbackHandler())
	h.server = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	h.serveWG.Go(func() { _ = h.server.Serve(ln) })
	return h, nil
}

// produce writes until ctx ends, then waits for the producers' commit
// calls still in flight.
func (h *halfProducer) produce(ctx context.Context) {
	var wg sync.WaitGroup
	for w := range h.workers {
		wg.Go(func() { h.work(ctx, w) })
	}
	wg.Wait()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	// An error here only means calls were abandoned: check-back resolves
	// them, and endFailed counts them.
	_ = h.closeProducers(cctx)
}

// closeProducers closes every producer (idempotent).
func (h *halfProducer) closeProducers(ctx context.Context) error {
	var errs []error
	for _, p := range h.producers {
		errs = append(errs, p.Close(ctx))
	}
	return errors.Join(errs...)
}

func (h *halfProducer) work(ctx context.Context, w int) {
	lim := rate.NewLimiter(rate.Limit(h.rate/float64(h.workers)), 1)
	var next [workerKeys]int
	for i := 0; lim.Wait(ctx) == nil; i++ {
		k := i % workerKeys
		next[k]++
		key := "h" + strconv.Itoa(w) + "-" + strconv.Itoa(k)
		h.stats.attempts.Add(1)
		p := h.producers[(i+w)%len(h.producers)]
		if err := h.send(ctx, p, key, next[k]); err != nil && !errors.Is(err, errRolledBack) {
			h.stats.failed.Add(1)
		}
	}
}

// send sends one half message whose local transaction writes a payment.
func (h *halfProducer) send(ctx context.Context, p *halfmsg.Producer, key string, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id := fmt.Sprintf("%s-%s-%d", h.run, key, n)
	msg := txmsg.Message{ID: id, Topic: h.topic, Key: []byte(key), Value: []byte(strconv.Itoa(n))}
	rollback := rand.Float64() < rollbackShare
	return p.SendInTransaction(ctx, msg, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, insertPayment, id, h.topic, key, n); err != nil {
			return err
		}
		if rollback {
			return errRolledBack
		}
		return nil
	})
}

// close closes the producers, then stops the check-back server.
func (h *halfProducer) close(ctx context.Context) error {
	err := h.closeProducers(ctx)
	err = errors.Join(err, h.server.Shutdown(ctx))
	h.serveWG.Wait()
	return err
}

// dropCommits drops every commit call of dropShare of the messages (chosen
// by a hash of the id, so the producer's retries are dropped too) before
// they are sent.
type dropCommits struct {
	next http.RoundTripper
	h    *halfProducer
}

func (d dropCommits) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/commit") {
		f := fnv.New64a()
		f.Write([]byte(r.URL.Path))
		if float64(f.Sum64()%10000) < dropShare*10000 {
			if _, seen := d.h.drops.LoadOrStore(r.URL.Path, struct{}{}); !seen {
				d.h.dropped.Add(1)
			}
			if r.Body != nil {
				r.Body.Close()
			}
			return nil, errors.New("chaos: commit call dropped on purpose")
		}
	}
	return d.next.RoundTrip(r)
}

// registerGroup registers the producer group "chaos" with its check-back URL
// on loopback and returns its credentials.
func registerGroup(ctx context.Context, db *sql.DB, url string) (halfmsg.Group, error) {
	store, err := broker.NewStore(db, broker.WithAddressPolicy(broker.AddressPolicy{AllowLoopback: true}))
	if err != nil {
		return halfmsg.Group{}, fmt.Errorf("chaos: %w", err)
	}
	g, err := store.PutGroup(ctx, broker.Actor{Name: "chaos"}, "chaos", url, false)
	if err != nil {
		return halfmsg.Group{}, fmt.Errorf("chaos: register producer group: %w", err)
	}
	return g, nil
}
