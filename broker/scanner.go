package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/backoff"
	"github.com/txmsg/txmsg/internal/schedule"
	"github.com/txmsg/txmsg/internal/setting"
)

// Claim is one prepared message the Scanner has claimed for a check: the
// checkback.Request to send (CheckCount already counts this check), where to send it,
// and the message's own schedule.
type Claim struct {
	checkback.Request
	// URL is the producer's check-back URL; empty when neither the message
	// nor its producer group has one (the check then fails as unknown).
	URL string
	// Secret is the producer group's secret, which signs the check-back;
	// empty for a group not registered (the check goes unsigned). Never log
	// it.
	Secret string
	// MaxChecks is how many checks the message gets before it is discarded.
	MaxChecks int
	// Interval is the message's check timeout: the delay before the first
	// check and the start of the backoff between later ones.
	Interval time.Duration
}

// CheckResult is the outcome of one check, for CheckStore.RecordCheck.
type CheckResult struct {
	// Answer is commit, rollback or unknown (also after an error).
	Answer checkback.Answer
	// Err is why the call failed, nil for a clean answer.
	Err error
	// Latency is the call's round trip.
	Latency time.Duration
	// NextCheck is the delay before the next check, when Answer is unknown
	// and Discard is false.
	NextCheck time.Duration
	// Discard is set when this was the last allowed check and the answer
	// was unknown: the message is given up, never delivered by default.
	Discard bool
}

// CheckStore is where the Scanner finds and resolves prepared messages. Package
// broker implements it on MySQL.
type CheckStore interface {
	// ClaimDue claims up to limit prepared messages whose check time has
	// passed: it counts the check (CheckCount includes it) and pushes the
	// next check time lease ahead, so no other scanner asks while this one
	// does. Concurrent callers never get the same message.
	ClaimDue(ctx context.Context, limit int, lease time.Duration) ([]Claim, error)
	// RecordCheck stores r for c: commit or rollback resolve the message
	// (unless it was resolved meanwhile, which wins), unknown schedules the
	// next check or discards the message.
	RecordCheck(ctx context.Context, c Claim, r CheckResult) error
}

// ScannerConfig configures a Scanner. DefaultScannerConfig holds the
// defaults noted; WithDefaults fills the zero fields of a ScannerConfig with
// them, and NewScanner does so before it validates.
type ScannerConfig struct {
	// Schedule is the cron spec of the scan (default "@every 1s").
	Schedule string
	// Concurrency is the most check-back calls in flight at once, per
	// scanner (default 16).
	Concurrency int
	// CallTimeout bounds one check-back call (default 3s).
	CallTimeout time.Duration
	// MaxInterval caps the backoff between two checks of one message
	// (default 5m).
	MaxInterval time.Duration
	// Lease is how long a claimed check keeps other scanners away; after a
	// crash the message is checked again once it passes. Zero means
	// CallTimeout + 5s (default 0).
	Lease time.Duration
	// Policy says which addresses check-backs may reach (default: the zero
	// AddressPolicy, which refuses loopback); it is checked on every
	// address dialed. Redirects are never followed.
	Policy AddressPolicy
}

// DefaultScannerConfig returns the defaults of every field.
func DefaultScannerConfig() ScannerConfig {
	return ScannerConfig{Schedule: "@every 1s", Concurrency: 16, CallTimeout: 3 * time.Second, MaxInterval: 5 * time.Minute}
}

// WithDefaults returns a copy of c whose zero fields hold
// DefaultScannerConfig's values, and Lease CallTimeout + 5s. c is not
// changed.
func (c ScannerConfig) WithDefaults() ScannerConfig {
	setting.FillZero(&c, DefaultScannerConfig())
	if c.Lease == 0 {
		c.Lease = c.CallTimeout + 5*time.Second
	}
	return c
}

// Validate checks every field without changing c, and names each bad one
// by its configuration key (checkback.*). Call WithDefaults first to fill a
// partial ScannerConfig.
func (c ScannerConfig) Validate() error {
	var p setting.Problems
	if _, err := cron.ParseStandard(c.Schedule); err != nil {
		p.Add("checkback.scan", c.Schedule, `want a cron spec such as "@every 1m" or "*/5 * * * *": `+err.Error())
	}
	p.Check(c.Concurrency >= 1 && c.Concurrency <= 1024, "checkback.concurrency", c.Concurrency, "want 1 to 1024")
	p.Check(c.CallTimeout >= time.Millisecond, "checkback.call_timeout", c.CallTimeout, "want at least 1ms")
	p.Check(c.MaxInterval >= time.Millisecond, "checkback.max_interval", c.MaxInterval, "want at least 1ms")
	p.Check(c.Lease == 0 || c.Lease > c.CallTimeout, "checkback lease", c.Lease,
		"want more than checkback.call_timeout ("+setting.FormatDuration(c.CallTimeout)+"), or 0 for call_timeout + 5s")
	if _, err := c.Policy.rules(); err != nil {
		p.Add("checkback.allow_hosts", strings.Join(c.Policy.AllowHosts, ","), err.Error())
	}
	return p.Err()
}

// Scanner finds prepared messages due for a check-back and asks their
// producers. It is safe for concurrent use; run it with Run.
type Scanner struct {
	store   CheckStore
	cfg     ScannerConfig
	client  *http.Client
	log     *slog.Logger
	metrics hooks
}

// ScannerOption configures a Scanner.
type ScannerOption func(*Scanner)

// WithScannerLogger sets the logger (default: discarded).
func WithScannerLogger(l *slog.Logger) ScannerOption {
	return func(s *Scanner) {
		if l != nil {
			s.log = l
		}
	}
}

// WithScannerHooks adds measurement hooks (default: none); see Hook.
func WithScannerHooks(hs ...Hook) ScannerOption {
	return func(s *Scanner) { s.metrics = append(s.metrics, hs...) }
}

// NewScanner returns a Scanner over store. It fills the zero fields of cfg
// with their defaults (ScannerConfig.WithDefaults) and validates it.
func NewScanner(store CheckStore, cfg ScannerConfig, opts ...ScannerOption) (*Scanner, error) {
	if store == nil {
		return nil, errors.New("broker: checkback: nil Store")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker: checkback: %w", err)
	}
	rules, err := cfg.Policy.rules()
	if err != nil {
		return nil, err
	}
	s := &Scanner{store: store, cfg: cfg, log: slog.New(slog.DiscardHandler), client: newCheckbackClient(rules, cfg.Concurrency)}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Run scans on the configured schedule until ctx ends, then stops the cron
// and waits for the running scan. In-flight calls are canceled with ctx and
// not recorded: their claims stay counted and the messages are checked again
// once the lease passes. Scans never overlap; a panic is recovered and
// logged. Run returns nil after a clean shutdown.
func (s *Scanner) Run(ctx context.Context) error {
	stop, err := schedule.Cron(s.cfg.Schedule, s.log, func() {
		if _, err := s.Scan(ctx); err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "broker: checkback: scan failed", slog.Any("error", err))
		}
	})
	if err != nil {
		return fmt.Errorf("broker: checkback: scan: %w", err)
	}
	<-ctx.Done()
	stop()
	return nil
}

// Scan checks every message due now and returns how many it checked. Calls
// run on a pool of ScannerConfig.Concurrency workers, never more at once: as
// workers finish, new claims fill the pool again (a quarter of it or more
// per claim transaction), and Scan returns when nothing more is due and
// every call has been recorded. A check interrupted by ctx stays counted.
func (s *Scanner) Scan(ctx context.Context) (int, error) {
	n := s.cfg.Concurrency
	slots := make(chan struct{}, n)
	var wg sync.WaitGroup
	defer wg.Wait()
	total := 0
	for {
		// Claim in groups of at least a quarter of the pool (when calls are
		// in flight to free the slots), not one by one: every claim is a
		// transaction. Then take every other slot that is free.
		free := 0
		group := max(1, n/4)
	fill:
		for free < n {
			if free < group {
				select {
				case slots <- struct{}{}:
					free++
				case <-ctx.Done():
					for range free {
						<-slots
					}
					return total, nil
				}
				continue
			}
			select {
			case slots <- struct{}{}:
				free++
			default:
				break fill
			}
		}
		claims, err := s.store.ClaimDue(ctx, free, s.cfg.Lease)
		for range free - len(claims) {
			<-slots
		}
		if err != nil {
			s.metrics.CheckError("claim")
			return total, fmt.Errorf("broker: checkback: claim due messages: %w", err)
		}
		for i, c := range claims {
			if i >= free {
				// A Store that returns more than asked breaks its contract;
				// each extra claim still waits for a slot of its own, so the
				// bound holds and no worker waits for a slot never given.
				slots <- struct{}{}
			}
			wg.Go(func() {
				defer func() { <-slots }()
				s.check(ctx, c)
			})
		}
		total += len(claims)
		if len(claims) < free {
			return total, nil
		}
	}
}

func (s *Scanner) check(ctx context.Context, c Claim) {
	if c.CheckCount > c.MaxChecks {
		// The message's last allowed check was claimed but never recorded
		// (a crash, or a failed RecordCheck): asking once more would break
		// the max_checks bound, so the message is discarded unasked.
		s.discardUnasked(ctx, c)
		return
	}
	start := time.Now()
	var (
		a   checkback.Answer
		err error
	)
	if c.URL == "" {
		err = fmt.Errorf("%w: producer group %q", errNoURL, c.ProducerGroup)
	} else {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		a, err = checkback.Call(cctx, s.client, c.URL, c.Secret, c.Request)
		cancel()
	}
	if ctx.Err() != nil {
		return
	}
	r := CheckResult{Answer: a, Err: err, Latency: time.Since(start)}
	outcome := "error"
	if err == nil {
		outcome = a.String()
	} else {
		r.Answer = checkback.AnswerUnknown
	}
	s.metrics.Checked(outcome, r.Latency)
	if r.Answer == checkback.AnswerUnknown {
		if c.CheckCount >= c.MaxChecks {
			r.Discard = true
		} else {
			p := backoff.Policy{Initial: c.Interval, Max: s.cfg.MaxInterval, Factor: 2}
			r.NextCheck = p.Delay(c.CheckCount)
		}
	}
	if err := s.store.RecordCheck(ctx, c, r); err != nil {
		if ctx.Err() == nil {
			s.metrics.CheckError("record")
			s.log.ErrorContext(ctx, "broker: checkback: record check failed",
				slog.String("msg_id", c.ID), slog.Int("attempt", c.CheckCount), slog.Any("error", err))
		}
		return
	}
	switch {
	case r.Discard:
		s.log.WarnContext(ctx, "broker: checkback: message discarded after its last check",
			slog.String("msg_id", c.ID), slog.String("producer_group", c.ProducerGroup),
			slog.String("topic", c.Topic), slog.Int("attempt", c.CheckCount), slog.Any("error", err))
	case err != nil:
		s.log.DebugContext(ctx, "broker: checkback: check failed",
			slog.String("msg_id", c.ID), slog.Int("attempt", c.CheckCount), slog.Any("error", err))
	}
}

// discardUnasked records claim c, which is past its message's max checks,
// as the discard it leads to, without calling the producer.
func (s *Scanner) discardUnasked(ctx context.Context, c Claim) {
	err := fmt.Errorf("%w: check %d not made: the message allows %d and the last one was claimed but never recorded",
		errNotAsked, c.CheckCount, c.MaxChecks)
	if rerr := s.store.RecordCheck(ctx, c, CheckResult{Answer: checkback.AnswerUnknown, Err: err, Discard: true}); rerr != nil {
		if ctx.Err() == nil {
			s.metrics.CheckError("record")
			s.log.ErrorContext(ctx, "broker: checkback: record check failed",
				slog.String("msg_id", c.ID), slog.Int("attempt", c.CheckCount), slog.Any("error", rerr))
		}
		return
	}
	s.log.WarnContext(ctx, "broker: checkback: message discarded after its last check",
		slog.String("msg_id", c.ID), slog.String("producer_group", c.ProducerGroup),
		slog.String("topic", c.Topic), slog.Int("attempt", c.CheckCount), slog.Any("error", err))
}
