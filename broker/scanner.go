package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	"golang.org/x/sync/semaphore"

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
	// seq is the message's row, set by Store.ClaimDue: RecordChecks
	// addresses a batch by it.
	seq int64
}

// CheckResult is the outcome of one check, for CheckStore.RecordChecks.
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
	// RecordChecks stores the result of each record: commit or rollback
	// resolve its message (unless it was resolved meanwhile, which wins),
	// unknown schedules the next check or discards the message. It returns
	// nil when every record was stored, else one error per record (nil for
	// those stored): a record that fails does not fail the others.
	RecordChecks(ctx context.Context, recs []CheckRecord) []error
}

// ScannerConfig configures a Scanner. DefaultScannerConfig holds the
// defaults noted; WithDefaults fills the zero fields of a ScannerConfig with
// them, and NewScanner does so before it validates.
type ScannerConfig struct {
	// Schedule is the cron spec of the scan (default "@every 1s").
	Schedule string
	// Concurrency is the most checks in flight at once, per scanner, alone
	// or in batch calls, and the size of a claim batch: up to as many
	// claims again wait queued for a worker (default 64).
	Concurrency int
	// CallTimeout bounds one check-back call (default 3s).
	CallTimeout time.Duration
	// MaxInterval caps the backoff between two checks of one message
	// (default 5m).
	MaxInterval time.Duration
	// Lease is how long a claimed check keeps other scanners away; after a
	// crash the message is checked again once it passes. A claim waits in
	// the scanner's queue for at most about one call before its own call,
	// so the lease must cover two: more than 2 x CallTimeout. Zero means
	// 2 x CallTimeout + 5s (default 0).
	Lease time.Duration
	// Policy says which addresses check-backs may reach (default: the zero
	// AddressPolicy, which refuses loopback); it is checked on every
	// address dialed. Redirects are never followed.
	Policy AddressPolicy
}

// DefaultScannerConfig returns the defaults of every field.
func DefaultScannerConfig() ScannerConfig {
	return ScannerConfig{Schedule: "@every 1s", Concurrency: 64, CallTimeout: 3 * time.Second, MaxInterval: 5 * time.Minute}
}

// WithDefaults returns a copy of c whose zero fields hold
// DefaultScannerConfig's values, and Lease 2 x CallTimeout + 5s. c is not
// changed.
func (c ScannerConfig) WithDefaults() ScannerConfig {
	setting.FillZero(&c, DefaultScannerConfig())
	if c.Lease == 0 {
		c.Lease = 2*c.CallTimeout + 5*time.Second
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
	p.Check(c.Lease == 0 || c.Lease > 2*c.CallTimeout, "checkback lease", c.Lease,
		"want more than 2 x checkback.call_timeout ("+setting.FormatDuration(2*c.CallTimeout)+"), or 0 for 2 x call_timeout + 5s")
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
	caller  *checkback.Caller
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
	s := &Scanner{store: store, cfg: cfg, log: slog.New(slog.DiscardHandler), caller: checkback.NewCaller(newCheckbackClient(rules, cfg.Concurrency))}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Run scans once at start, then on the configured schedule until ctx ends;
// it then stops the cron and waits for the running scan. In-flight calls are
// canceled with ctx and not recorded: their claims stay counted and the
// messages are checked again once the lease passes. Scans never overlap; a
// panic is recovered and logged. Run returns nil after a clean shutdown.
func (s *Scanner) Run(ctx context.Context) error {
	scan := func() {
		if _, err := s.Scan(ctx); err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "broker: checkback: scan failed", slog.Any("error", err))
		}
	}
	// The scan at start checks what came due while no broker ran (a
	// restart) without waiting for the schedule's first tick, which a cron
	// spec may put minutes away.
	func() {
		defer func() {
			if r := recover(); r != nil {
				s.log.ErrorContext(ctx, "broker: checkback: scan panicked", slog.Any("panic", r),
					slog.String("stack", string(debug.Stack())))
			}
		}()
		scan()
	}()
	stop, err := schedule.Cron(s.cfg.Schedule, s.log, scan)
	if err != nil {
		return fmt.Errorf("broker: checkback: scan: %w", err)
	}
	<-ctx.Done()
	stop()
	return nil
}

// maxCallBatch caps the checks one batch request carries: enough that the
// request's own cost is small beside its checks, few enough that a
// transaction still open at the producer (whose lock the batch waits on)
// holds up few answers. A batch also takes at most a quarter of
// ScannerConfig.Concurrency, so that at least four calls share it.
const maxCallBatch = 16

// Scan checks every message due now and returns how many it checked. Calls
// run on ScannerConfig.Concurrency workers; a call asks about one message,
// or about several asked at one URL with one secret (a producer group's)
// where that producer takes batches (checkback.BatchHeader), and the checks
// in flight never pass
// Concurrency, so a producer that answers a batch check by check serves no
// more at once than without batches. One goroutine claims in
// batches and keeps up to a pool's worth of claims queued, so that a worker
// that finishes a call starts the next without waiting for a claim; one
// writer records the results, each transaction holding every result that
// queued while the previous one ran. Scan returns when nothing more is due
// and every call has been recorded. A check interrupted by ctx stays
// counted.
func (s *Scanner) Scan(ctx context.Context) (int, error) {
	n := s.cfg.Concurrency
	// At most n claims wait in the queue: each waits for about one call of
	// a worker (at most CallTimeout while the writer keeps up), well inside
	// its lease, so another scanner does not claim it again meanwhile,
	// which would spend one of the message's max_checks for nothing.
	queue := make(chan []Claim, n)
	done := make(chan CheckRecord, MaxRecordBatch)
	// A token per claim not yet answered: queued or in a call. While calls
	// wait, those in flight hold more than n-most checks (else the first
	// waiting would fit), so with 2n-(most-1) tokens the claims waiting fit
	// in n at once: each starts within one call of being claimed, even when
	// calls of uneven sizes leave part of n unused (2n let some wait two).
	tokens := make(chan struct{}, 2*n-(s.mostPerCall()-1))
	inCalls := semaphore.NewWeighted(int64(n))
	var workers, writer sync.WaitGroup
	for range n {
		workers.Go(func() {
			for call := range queue {
				var recs []CheckRecord
				// Once ctx ends the claims are dropped unasked, as calls
				// it interrupts are: their checks stay counted.
				if inCalls.Acquire(ctx, int64(len(call))) == nil {
					recs = s.checkAll(ctx, call)
					inCalls.Release(int64(len(call)))
				}
				for range call {
					<-tokens
				}
				for _, r := range recs {
					done <- r
				}
			}
		})
	}
	writer.Go(func() { s.record(ctx, done) })
	total, err := s.feed(ctx, queue, tokens)
	close(queue)
	workers.Wait()
	close(done)
	writer.Wait()
	return total, err
}

// feed claims due messages into queue until a claim finds fewer than it
// asked for, ctx ends or a claim fails, and returns how many it claimed.
func (s *Scanner) feed(ctx context.Context, queue chan<- []Claim, tokens chan struct{}) (int, error) {
	n := cap(queue)
	total := 0
	for {
		// Claim a pool's worth or more at once (the first claim fills the
		// queue and the pool), not one by one: every claim is a transaction.
		free := 0
	fill:
		for free < cap(tokens) {
			if free < n {
				select {
				case tokens <- struct{}{}:
					free++
				case <-ctx.Done():
					for range free {
						<-tokens
					}
					return total, nil
				}
				continue
			}
			select {
			case tokens <- struct{}{}:
				free++
			default:
				break fill
			}
		}
		claims, err := s.store.ClaimDue(ctx, free, s.cfg.Lease)
		for range free - len(claims) {
			<-tokens
		}
		if err != nil {
			s.metrics.CheckError("claim")
			return total, fmt.Errorf("broker: checkback: claim due messages: %w", err)
		}
		// A Store that returns more than asked breaks its contract; each
		// extra claim still takes a token of its own before it is queued,
		// so the queue stays bounded.
		held := min(free, len(claims))
		for _, call := range s.calls(claims) {
			for ; held < len(call); held++ {
				tokens <- struct{}{}
			}
			held -= len(call)
			queue <- call
		}
		total += len(claims)
		if len(claims) < free {
			return total, nil
		}
	}
}

// record writes the results from done until it is closed: the first that
// arrives alone, then every result that queued meanwhile in one
// RecordChecks, up to MaxRecordBatch (group commit: one transaction and one
// log flush for many checks, and no wait for a batch to fill).
func (s *Scanner) record(ctx context.Context, done <-chan CheckRecord) {
	batch := make([]CheckRecord, 0, MaxRecordBatch)
	for r := range done {
		batch = append(batch[:0], r)
	more:
		for len(batch) < MaxRecordBatch {
			select {
			case r, ok := <-done:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		errs := s.store.RecordChecks(ctx, batch)
		for i, r := range batch {
			var err error
			if errs != nil {
				err = errs[i]
			}
			s.recorded(ctx, r, err)
		}
	}
}

// mostPerCall is the most checks one call carries: maxCallBatch, or a
// quarter of the concurrency when that is less, and at least one.
func (s *Scanner) mostPerCall() int { return max(1, min(maxCallBatch, s.cfg.Concurrency/4)) }

// calls splits claims into the calls that ask about them: the claims of one
// producer (URL and secret) together, as many as it takes in one request
// and at most maxCallBatch or a quarter of the concurrency, and every other
// claim alone, among them a message's last check, which nothing else may
// put at risk.
func (s *Scanner) calls(claims []Claim) [][]Claim {
	var out [][]Claim
	filling := map[string]int{} // URL and secret → index in out of their call
	most := s.mostPerCall()
	for _, c := range claims {
		size := 1
		if c.URL != "" && c.CheckCount < c.MaxChecks {
			size = min(s.caller.BatchSize(c.URL), most)
		}
		if size > 1 {
			k := c.URL + "\x00" + c.Secret
			if i, ok := filling[k]; ok && len(out[i]) < size {
				out[i] = append(out[i], c)
				continue
			}
			filling[k] = len(out)
		}
		out = append(out, []Claim{c})
	}
	return out
}

// checkAll makes one call about the claims of call and returns the results
// to record, none for a check that ctx ended first. A batch the producer did
// not answer as one (checkback.ErrBatchRefused: it no longer takes
// batches, or failed) is asked again claim by claim, within the same
// checks and by the same deadline: a claim's lease covers about two calls,
// one of them spent in the queue.
func (s *Scanner) checkAll(ctx context.Context, call []Claim) []CheckRecord {
	deadline := time.Now().Add(s.cfg.CallTimeout)
	if len(call) == 1 {
		if r, ok := s.check(ctx, call[0], deadline); ok {
			return []CheckRecord{r}
		}
		return nil
	}
	recs, rest := s.checkBatch(ctx, call, deadline)
	got := make([]CheckRecord, len(rest))
	asked := make([]bool, len(rest))
	var wg sync.WaitGroup
	for i, c := range rest {
		wg.Go(func() { got[i], asked[i] = s.check(ctx, c, deadline) })
	}
	wg.Wait()
	for i, r := range got {
		if asked[i] {
			recs = append(recs, r)
		}
	}
	return recs
}

// checkBatch asks the producer about the claims of call in one batch by
// deadline and returns the results to record, and the claims to ask one by
// one: those the producer did not answer as a batch. A batch sent as
// several requests keeps the answers that came before one failed.
func (s *Scanner) checkBatch(ctx context.Context, call []Claim, deadline time.Time) (recs []CheckRecord, rest []Claim) {
	reqs := make([]checkback.Request, len(call))
	for i, c := range call {
		reqs[i] = c.Request
	}
	start := time.Now()
	cctx, cancel := context.WithDeadline(ctx, deadline)
	as, err := s.caller.CallBatch(cctx, call[0].URL, call[0].Secret, reqs)
	cancel()
	if ctx.Err() != nil {
		return nil, nil
	}
	lat := time.Since(start)
	if pe := (*checkback.PartialError)(nil); errors.As(err, &pe) {
		as, err = pe.Answers, pe.Err
		for i, a := range as {
			recs = append(recs, s.result(call[i], a, nil, lat))
		}
		call = call[len(as):]
	}
	if errors.Is(err, checkback.ErrBatchRefused) {
		s.log.InfoContext(ctx, "broker: checkback: producer did not answer a batch; asking one message at a time",
			slog.String("url", call[0].URL), slog.Any("error", err))
		return recs, call
	}
	for i, c := range call {
		a := checkback.AnswerUnknown
		if err == nil {
			a = as[i]
		}
		recs = append(recs, s.result(c, a, err, lat))
	}
	return recs, nil
}

// check asks the producer about c by deadline and returns the result to
// record; false when ctx ended first (the check is then not recorded).
func (s *Scanner) check(ctx context.Context, c Claim, deadline time.Time) (CheckRecord, bool) {
	if c.CheckCount > c.MaxChecks {
		// The message's last allowed check was claimed but never recorded
		// (a crash, or a failed record): asking once more would break the
		// max_checks bound, so the message is discarded unasked.
		err := fmt.Errorf("%w: check %d not made: the message allows %d and the last one was claimed but never recorded",
			errNotAsked, c.CheckCount, c.MaxChecks)
		return CheckRecord{Claim: c, Result: CheckResult{Answer: checkback.AnswerUnknown, Err: err, Discard: true}}, true
	}
	start := time.Now()
	var (
		a   checkback.Answer
		err error
	)
	if c.URL == "" {
		err = fmt.Errorf("%w: producer group %q", errNoURL, c.ProducerGroup)
	} else {
		cctx, cancel := context.WithDeadline(ctx, deadline)
		a, err = s.caller.Call(cctx, c.URL, c.Secret, c.Request)
		cancel()
	}
	if ctx.Err() != nil {
		return CheckRecord{}, false
	}
	return s.result(c, a, err, time.Since(start)), true
}

// result is what to record for claim c, asked in latency: answer a, or
// unknown after err.
func (s *Scanner) result(c Claim, a checkback.Answer, err error, latency time.Duration) CheckRecord {
	r := CheckResult{Answer: a, Err: err, Latency: latency}
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
	return CheckRecord{Claim: c, Result: r}
}

// recorded logs and counts check r once RecordChecks stored it (err nil)
// or failed to.
func (s *Scanner) recorded(ctx context.Context, r CheckRecord, err error) {
	c := r.Claim
	if err != nil {
		if ctx.Err() == nil {
			s.metrics.CheckError("record")
			s.log.ErrorContext(ctx, "broker: checkback: record check failed",
				slog.String("msg_id", c.ID), slog.Int("attempt", c.CheckCount), slog.Any("error", err))
		}
		return
	}
	switch {
	case r.Result.Discard:
		s.log.WarnContext(ctx, "broker: checkback: message discarded after its last check",
			slog.String("msg_id", c.ID), slog.String("producer_group", c.ProducerGroup),
			slog.String("topic", c.Topic), slog.Int("attempt", c.CheckCount), slog.Any("error", r.Result.Err))
	case r.Result.Err != nil:
		s.log.DebugContext(ctx, "broker: checkback: check failed",
			slog.String("msg_id", c.ID), slog.Int("attempt", c.CheckCount), slog.Any("error", r.Result.Err))
	}
}
