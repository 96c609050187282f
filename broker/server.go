package broker

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/schedule"
	"github.com/txmsg/txmsg/relay"
)

// Server is the `txmsg broker` daemon: the HTTP API, the check-back scanner
// and a relay engine delivering committed half messages, on one database.
// Several Servers may share a database: SKIP LOCKED claims keep their
// check-backs apart and the relay's shard leases keep their deliveries apart.
type Server struct {
	cfg      Config
	store    *Store
	handler  *Handler
	scanner  *Scanner
	engine   *relay.Engine
	log      *slog.Logger
	metrics  hooks
	listener net.Listener
	tls      *tls.Config
	addr     atomic.Pointer[string]
	running  atomic.Bool
}

// ServerOption configures a Server.
type ServerOption func(*serverOptions)

type serverOptions struct {
	log        *slog.Logger
	hooks      hooks
	relayHooks []relay.Hook
	listener   net.Listener
}

// WithLogger sets the logger of the server and its parts (default: discarded).
func WithLogger(l *slog.Logger) ServerOption { return func(o *serverOptions) { o.log = l } }

// WithHooks adds the broker's measurement hooks (default: none); see Hook.
func WithHooks(hs ...Hook) ServerOption {
	return func(o *serverOptions) { o.hooks = append(o.hooks, hs...) }
}

// WithRelayHooks adds the relay engine's measurement hooks (default: none).
func WithRelayHooks(hs ...relay.Hook) ServerOption {
	return func(o *serverOptions) { o.relayHooks = append(o.relayHooks, hs...) }
}

// WithListener serves the API on l instead of listening on Config.Listen;
// Run closes it. With TLS configured, Run serves TLS on it.
func WithListener(l net.Listener) ServerOption { return func(o *serverOptions) { o.listener = l } }

// NewServer fills the zero fields of cfg with their defaults
// (Config.WithDefaults), validates it and builds the daemon's parts on db. It
// does not listen or connect yet: Run does.
func NewServer(db *sql.DB, cfg Config, opts ...ServerOption) (*Server, error) {
	if db == nil {
		return nil, errors.New("broker: server: nil *sql.DB")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	o := serverOptions{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	// A commit wakes the relay's worker for its shard at once; without it
	// an idle shard would notice the commit only at its next poll.
	var engine *relay.Engine
	wake := func(shard int) { engine.Wake(txmsg.SourceHalf, shard) }
	store, err := NewStore(db, WithShards(cfg.Relay.Shards), WithMaxValueBytes(cfg.MaxValueBytes),
		WithCheckTimeout(cfg.CheckTimeout), WithMaxChecks(cfg.MaxChecks), WithStoreHooks(o.hooks...), WithOnCommit(wake),
		WithStoreLogger(o.log), WithAddressPolicy(cfg.CheckbackPolicy))
	if err != nil {
		return nil, err
	}
	hopts := []HandlerOption{WithMaxBodyBytes(cfg.MaxBodyBytes), WithHandlerLogger(o.log),
		WithMaxConcurrentRequests(cfg.MaxConcurrentRequests), WithMaxPreparedPerGroup(cfg.MaxPreparedPerGroup)}
	if cfg.AuthDisabled {
		hopts = append(hopts, WithAuthDisabled())
	} else {
		hopts = append(hopts, WithOperatorToken(cfg.OperatorToken))
	}
	handler, err := NewHandler(store, hopts...)
	if err != nil {
		return nil, err
	}
	tlsConfig, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	scanner, err := NewScanner(store, cfg.scanner(), WithScannerLogger(o.log), WithScannerHooks(o.hooks...))
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	engine, err = relay.New(db, cfg.Relay, relay.WithSources(NewHalfSource()), relay.WithLogger(o.log),
		relay.WithHooks(o.relayHooks...))
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	return &Server{cfg: cfg, store: store, handler: handler, scanner: scanner, engine: engine,
		log: o.log, metrics: o.hooks, listener: o.listener, tls: tlsConfig}, nil
}

// Store returns the server's store, for admin commands in the same process.
func (s *Server) Store() *Store { return s.store }

// Handler returns the API handler, to mount elsewhere.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr returns the API's listening address once Run has started listening,
// or "" before.
func (s *Server) Addr() string {
	if p := s.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// Ready reports whether the API is listening and the relay engine is ready.
func (s *Server) Ready() bool { return s.Addr() != "" && s.engine.Ready() }

// Run serves until ctx ends, then shuts down: the API stops accepting and
// finishes requests in flight (up to Config.ShutdownTimeout), the scanner
// cancels its calls (their messages are checked again after the lease), and
// the relay engine finishes its in-flight batches (see relay.Engine.Run),
// and so do the group-commit batches of calls already made. It returns
// after every part has stopped: nil after a clean shutdown, or
// the first part's error, which also stops the others. Run may be called
// once.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("broker: Run called twice")
	}
	ln := s.listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Listen); err != nil {
			return fmt.Errorf("broker: listen on %s: %w", s.cfg.Listen, err)
		}
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	addr := ln.Addr().String()
	s.addr.Store(&addr)
	// Bodies are at most max_body_bytes: 30s to send one is generous, and
	// it keeps a client trickling a body from holding a connection forever.
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("broker: serve API on %s: %w", addr, err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("broker: shut down API: %w", errors.Join(err, srv.Close()))
		}
		return nil
	})
	g.Go(func() error { return s.scanner.Run(gctx) })
	g.Go(func() error { return s.engine.Run(gctx) })
	g.Go(func() error { s.backlogLoop(gctx); return nil })
	if s.cfg.AuthDisabled {
		g.Go(func() error { s.warnAuthDisabled(gctx, authWarnInterval); return nil })
	}
	s.log.Info("broker started", slog.String("listen", addr), slog.Bool("tls", s.tls != nil),
		slog.Bool("auth", !s.cfg.AuthDisabled))
	err := g.Wait()
	// Requests are over; batches their callers stopped waiting for still
	// finish (at most batchTimeout) before the caller may close the pool.
	s.store.wait()
	s.log.Info("broker stopped", slog.String("listen", addr))
	return err
}

// backlogLoop refreshes the prepared-backlog metric until ctx ends.
func (s *Server) backlogLoop(ctx context.Context) {
	schedule.Every(ctx, s.cfg.BacklogInterval, func(ctx context.Context) {
		n, oldest, err := s.store.PreparedBacklog(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("broker: prepared backlog", slog.Any("error", err))
		case err == nil:
			s.metrics.PreparedBacklog(n, schedule.Age(oldest))
		}
	})
}

// authWarnInterval is how often a broker without authentication says so.
const authWarnInterval = time.Minute

// warnAuthDisabled logs that the API is open, now and every interval until
// ctx ends: it must not go unnoticed outside development.
func (s *Server) warnAuthDisabled(ctx context.Context, interval time.Duration) {
	schedule.Every(ctx, interval, func(context.Context) {
		s.log.Warn("broker: API authentication is disabled (broker.auth.disabled): anyone who reaches " +
			s.Addr() + " can prepare, commit and roll back any group's messages; for development only")
	})
}
