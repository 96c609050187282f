package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/relay"
)

// orderEnv prepares messages of fixed ids on one store and drains its half
// source like the relay does.
type orderEnv struct {
	*apiEnv
	t   *testing.T
	src *HalfSource
}

func newOrderEnv(t *testing.T) *orderEnv {
	t.Helper()
	return &orderEnv{apiEnv: newAPIEnv(t, WithShards(1)), t: t, src: NewHalfSource()}
}

// prepare prepares id in topic with key (none when empty) for group "g".
func (e *orderEnv) prepare(id, topic, key string) {
	e.t.Helper()
	m := txmsg.Message{ID: id, Topic: topic, Value: []byte(id)}
	if key != "" {
		m.Key = []byte(key)
	}
	prepareOne(e.t, e.store, halfmsg.PrepareRequest{Message: m, CheckTimeout: time.Hour})
}

func (e *orderEnv) commit(ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		if _, err := e.store.Commit(context.Background(), id); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *orderEnv) rollback(ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		if _, err := e.store.Rollback(context.Background(), id); err != nil {
			e.t.Fatal(err)
		}
	}
}

// drain delivers every deliverable row, rows at a time, and returns their
// ids in delivery order.
func (e *orderEnv) drain(rows int) string {
	e.t.Helper()
	ctx := context.Background()
	var got []string
	for range 100 {
		batch, err := e.src.Pending(ctx, e.db.DB, 0, relay.Limit{Rows: rows, Bytes: 1 << 20})
		if err != nil {
			e.t.Fatal(err)
		}
		if len(batch) == 0 {
			return strings.Join(got, " ")
		}
		if len(batch) > rows {
			e.t.Fatalf("Pending returned %d rows, limit %d", len(batch), rows)
		}
		for _, r := range batch {
			got = append(got, r.ID)
		}
		if err := e.src.Delivered(ctx, e.db.DB, batch); err != nil {
			e.t.Fatal(err)
		}
	}
	e.t.Fatalf("still draining after 100 rounds: %v", got)
	return ""
}

// A committed message waits while an earlier message of its topic and key
// is prepared, and goes once that one is committed (after it), rolled back
// or discarded. Other keys, other topics and messages without a key do not
// wait.
func TestBrokerHalfSourcePrepareOrder(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	ctx := context.Background()

	e.prepare("v1", "t", "k")     // its commit call is lost
	e.prepare("v2", "t", "k")     // committed at once
	e.prepare("other", "t", "k2") // another key
	e.prepare("t2", "t2", "k")    // another topic, same key
	e.prepare("nokey-1", "t", "") // no key: no order
	e.prepare("nokey-2", "t", "") // no key: no order
	e.commit("v2", "other", "t2", "nokey-2")
	if got := e.drain(10); got != "other t2 nokey-2" {
		t.Fatalf("delivered %q while v1 is prepared, want other t2 nokey-2 (v2 waits)", got)
	}
	e.commit("v1") // by check-back, seconds later
	if got := e.drain(10); got != "v1 v2" {
		t.Fatalf("delivered %q once v1 committed, want v1 v2", got)
	}

	// A rollback releases the messages behind.
	e.prepare("r1", "t", "k")
	e.prepare("r2", "t", "k")
	e.prepare("r3", "t", "k")
	e.commit("r3", "r2")
	if got := e.drain(10); got != "" {
		t.Fatalf("delivered %q while r1 is prepared", got)
	}
	e.rollback("r1")
	if got := e.drain(10); got != "r2 r3" {
		t.Fatalf("delivered %q after r1 rolled back, want r2 r3", got)
	}

	// A discard by check-back releases them too.
	e.prepare("d1", "t", "k")
	e.prepare("d2", "t", "k")
	e.commit("d2")
	if _, err := e.db.DB.ExecContext(ctx, `UPDATE txmsg_half_messages SET next_check_at = UTC_TIMESTAMP(6) WHERE id = 'd1'`); err != nil {
		t.Fatal(err)
	}
	claims, err := e.store.ClaimDue(ctx, 10, time.Minute)
	if err != nil || len(claims) != 1 || claims[0].ID != "d1" {
		t.Fatalf("claims %+v (%v), want d1", claims, err)
	}
	if got := e.drain(10); got != "" {
		t.Fatalf("delivered %q while d1 is checked", got)
	}
	if err := e.store.RecordCheck(ctx, claims[0], CheckResult{Answer: checkback.AnswerUnknown, Discard: true}); err != nil {
		t.Fatal(err)
	}
	if got := e.drain(10); got != "d2" {
		t.Fatalf("delivered %q after d1 was discarded, want d2", got)
	}
}

// A message committed by check-back records what it waits for as a
// producer's commit does, and a message that waits for one that itself
// waits is held until the first goes.
func TestBrokerHalfSourcePrepareOrderChains(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	ctx := context.Background()
	e.prepare("a1", "t", "k")
	e.prepare("a2", "t", "k")
	e.prepare("a3", "t", "k")
	e.commit("a3") // waits for a2, the latest earlier prepared
	// a2 is committed by check-back: it waits for a1.
	if _, err := e.db.DB.ExecContext(ctx, `UPDATE txmsg_half_messages SET next_check_at = UTC_TIMESTAMP(6) WHERE id = 'a2'`); err != nil {
		t.Fatal(err)
	}
	claims, err := e.store.ClaimDue(ctx, 10, time.Minute)
	if err != nil || len(claims) != 1 || claims[0].ID != "a2" {
		t.Fatalf("claims %+v (%v), want a2", claims, err)
	}
	if err := e.store.RecordCheck(ctx, claims[0], CheckResult{Answer: checkback.AnswerCommit}); err != nil {
		t.Fatal(err)
	}
	if info, err := e.store.Get(ctx, "a2"); err != nil || info.State != halfmsg.StateCommitted {
		t.Fatalf("a2: %+v (%v), want committed", info, err)
	}
	// a3's message (a2) left prepared, but a1 still holds both back.
	if got := e.drain(10); got != "" {
		t.Fatalf("delivered %q while a1 is prepared", got)
	}
	e.commit("a1")
	if got := e.drain(10); got != "a1 a2 a3" {
		t.Fatalf("delivered %q, want a1 a2 a3", got)
	}
}

// Released rows and rows that waited for nothing merge in seq order across
// batches smaller than either list.
func TestBrokerHalfSourcePrepareOrderMergesBatches(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	var want []string
	e.prepare("x0", "t", "x")
	for i := range 6 {
		held, free := fmt.Sprintf("x%d", i+1), fmt.Sprintf("y%d", i)
		e.prepare(held, "t", "x")
		e.prepare(free, "t", "y")
		want = append(want, held, free)
	}
	for _, id := range want {
		e.commit(id)
	}
	if got := e.drain(4); got != "y0 y1 y2 y3 y4 y5" {
		t.Fatalf("delivered %q while x0 is prepared, want the y messages", got)
	}
	for i := range 6 {
		e.prepare(fmt.Sprintf("z%d", i), "t", "y")
		e.commit(fmt.Sprintf("z%d", i))
	}
	e.commit("x0")
	if got, w := e.drain(4), "x0 x1 x2 x3 x4 x5 x6 z0 z1 z2 z3 z4 z5"; got != w {
		t.Fatalf("delivered %q, want %q", got, w)
	}
}

// A group that chose commit order does not wait.
func TestBrokerHalfSourceCommitOrderGroup(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	ctx := context.Background()
	if err := e.client.SetGroup(ctx, "g", "http://127.0.0.1:1/check", halfmsg.WithDeliveryOrder(halfmsg.OrderCommit)); err != nil {
		t.Fatal(err)
	}
	e.prepare("v1", "t", "k")
	e.prepare("v2", "t", "k")
	e.commit("v2")
	if got := e.drain(10); got != "v2" {
		t.Fatalf("delivered %q, want v2 at once in commit order", got)
	}
	e.commit("v1")
	if got := e.drain(10); got != "v1" {
		t.Fatalf("delivered %q, want v1", got)
	}
}

// The delivery order is set and read through the API and the Go client.
func TestBrokerAPIGroupDeliveryOrder(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	get := func(group string) map[string]string {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, env.url+"/v1/producer-groups/"+group, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testOperatorToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET group %s: %d %v", group, resp.StatusCode, err)
		}
		return out
	}
	if err := env.client.SetGroup(ctx, "shop", "http://127.0.0.1:1/check"); err != nil {
		t.Fatal(err)
	}
	if g, err := env.store.Group(ctx, "shop"); err != nil || g.Order != halfmsg.OrderPrepare {
		t.Fatalf("default group: %+v (%v), want prepare order", g, err)
	}
	if err := env.client.SetGroup(ctx, "shop", "http://127.0.0.1:1/check", halfmsg.WithDeliveryOrder(halfmsg.OrderCommit)); err != nil {
		t.Fatal(err)
	}
	if g := get("shop"); g["delivery_order"] != "commit" || g["checkback_url"] != "http://127.0.0.1:1/check" {
		t.Fatalf("GET after SetGroup(commit): %v", g)
	}
	req, err := http.NewRequest(http.MethodPut, env.url+"/v1/producer-groups/shop",
		strings.NewReader(`{"checkback_url":"http://127.0.0.1:1/check","delivery_order":"sideways"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testOperatorToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("PUT with delivery_order sideways: %d, want 400", resp.StatusCode)
	}
	// A PUT that leaves the order out keeps the group's.
	if err := env.client.SetGroup(ctx, "shop", "http://127.0.0.1:2/check"); err != nil {
		t.Fatal(err)
	}
	if g := get("shop"); g["delivery_order"] != "commit" || g["checkback_url"] != "http://127.0.0.1:2/check" {
		t.Fatalf("GET after SetGroup without order: %v", g)
	}
}

// End to end: v1's commit call is lost, v2 of the same key is committed at
// once, check-back commits v1 later; Kafka has v1 before v2.
func TestBrokerServerLostCommitKeepsPrepareOrder(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	kafka := testenv.NewKafka(t, 3)
	srv := startServer(t, db.DB, testServerConfig(kafka.Addrs))
	ctx := context.Background()
	url := producerServer(t, srv.Store(), "g", checkback.CheckerFunc(func(context.Context, checkback.Request) (checkback.Answer, error) {
		return checkback.AnswerCommit, nil
	}))
	if err := srv.client.SetGroup(ctx, "g", url); err != nil {
		t.Fatal(err)
	}
	const topic = "lost-commit"
	for _, id := range []string{"v1", "v2"} {
		if _, err := srv.client.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g",
			Message: txmsg.Message{ID: id, Topic: topic, Key: []byte("k"), Value: []byte(id)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.client.Commit(ctx, "v2"); err != nil {
		t.Fatal(err)
	}
	waitStates(t, srv.client, []string{"v1", "v2"}, halfmsg.StateDelivered, 20*time.Second)
	recs, err := testenv.Records(ctx, kafka.Addrs, topic)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, string(r.Value))
	}
	if strings.Join(got, " ") != "v1 v2" {
		t.Fatalf("Kafka has %v, want v1 v2", got)
	}
}

// Under concurrent prepares, commits, rollbacks and lost commit calls
// resolved late, while the source is drained, every key is delivered in
// prepare order and every committed message exactly once.
func TestBrokerHalfSourcePrepareOrderUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const producers, perProducer = 6, 40
	var (
		mu        sync.Mutex
		committed = map[string]bool{}
		lost      []string
		delivered []relay.Row
	)
	var drainErr error
	drained := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-drained
	})
	go func() {
		defer close(drained)
		for ctx.Err() == nil {
			batch, err := e.src.Pending(ctx, e.db.DB, 0, relay.Limit{Rows: 7, Bytes: 1 << 20})
			if err == nil {
				err = e.src.Delivered(ctx, e.db.DB, batch)
			}
			if err != nil {
				if ctx.Err() == nil {
					drainErr = err
				}
				return
			}
			mu.Lock()
			delivered = append(delivered, batch...)
			mu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perProducer {
				id := fmt.Sprintf("p%d-%d", p, i)
				_, err := e.store.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g", CheckTimeout: time.Hour,
					Message: txmsg.Message{ID: id, Topic: "t", Key: []byte(fmt.Sprintf("k%d", (p+i)%3)), Value: []byte(id)}})
				if err != nil {
					errs <- err
					return
				}
				switch i % 10 {
				case 0, 1:
					_, err = e.store.Rollback(ctx, id)
				case 2:
					mu.Lock()
					lost = append(lost, id)
					mu.Unlock()
				default:
					_, err = e.store.Commit(ctx, id)
					mu.Lock()
					committed[id] = true
					mu.Unlock()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Check-back resolves the lost commit calls, in no particular order.
	for i, id := range lost {
		var err error
		if i%2 == 0 {
			_, err = e.store.Commit(ctx, id)
			committed[id] = true
		} else {
			_, err = e.store.Rollback(ctx, id)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(delivered) < len(committed) {
			return fmt.Errorf("%d of %d committed messages delivered", len(delivered), len(committed))
		}
		return nil
	})
	cancel()
	<-drained
	if drainErr != nil {
		t.Fatal(drainErr)
	}
	last := map[string]int64{}
	seen := map[string]bool{}
	for _, r := range delivered {
		if !committed[r.ID] || seen[r.ID] {
			t.Fatalf("delivered %s: committed %v, seen before %v", r.ID, committed[r.ID], seen[r.ID])
		}
		seen[r.ID] = true
		if k := string(r.Key); r.Seq < last[k] {
			t.Fatalf("key %s: %s (seq %d) delivered after seq %d", k, r.ID, r.Seq, last[k])
		}
		last[string(r.Key)] = r.Seq
	}
	if len(seen) != len(committed) {
		t.Fatalf("delivered %d, committed %d", len(seen), len(committed))
	}
}

// Prepare order holds within a producer group: another group's message of
// the same topic and key, prepared earlier and never resolved, holds
// nothing back (else any group could stall another's deliveries).
func TestBrokerHalfSourcePrepareOrderIsPerGroup(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	prepareOne(t, e.store, halfmsg.PrepareRequest{ProducerGroup: "bank", CheckTimeout: time.Hour,
		Message: txmsg.Message{ID: "theirs", Topic: "t", Key: []byte("k"), Value: []byte("x")}})
	e.prepare("mine1", "t", "k")
	e.prepare("mine2", "t", "k")
	e.commit("mine2")
	if got := e.drain(10); got != "" {
		t.Fatalf("delivered %q while mine1, of the same group, is prepared", got)
	}
	e.commit("mine1")
	if got := e.drain(10); got != "mine1 mine2" {
		t.Fatalf("delivered %q beside another group's prepared message of the key, want mine1 mine2", got)
	}
}

// The ordering checks (what a commit makes a message wait for, and which
// waiting rows an earlier prepared message still holds back) dive into the
// key index: their cost does not grow with the messages their producer
// group has prepared, as it did when MariaDB read the group's prepared rows
// one by one instead, nor with the messages one hot key has prepared: a
// MAX over them read them all, and a correlated subquery reads those after
// the message, so the check-back, which resolves the oldest first, reads
// with constant bounds; a producer's commit, of a message among the latest
// of its key, keeps the single statement.
func TestOrderingChecksReadAFewRowsWhateverTheGroupHasPrepared(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	base := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	insertHalfRows(t, db.DB, "g", 20000, base, halfmsg.StatePrepared)
	insertHalfRows(t, db.DB, "h", 20000, base, halfmsg.StateDelivered)
	insertHalfRows(t, db.DB, "hot", 20000, base, halfmsg.StatePrepared)
	if _, err := db.DB.ExecContext(ctx, `UPDATE txmsg_half_messages SET msg_key = IF(producer_group = 'hot', 'k', IF(id = 'g-7', NULL, id))`); err != nil {
		t.Fatal(err)
	}
	// Committed rows of shard 0 that wait for a message that left prepared.
	if _, err := db.DB.ExecContext(ctx, `UPDATE txmsg_half_messages SET state = ?, waits_for = 1
WHERE id IN ('g-10', 'g-11', 'g-12')`, halfmsg.StateCommitted); err != nil {
		t.Fatal(err)
	}
	// One transaction, as the broker reads, so the session's counters
	// count each check's reads alone.
	tx, err := db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	seqOf := func(id string) int64 {
		var seq int64
		if err := tx.QueryRowContext(ctx, `SELECT seq FROM txmsg_half_messages WHERE id = ?`, id).Scan(&seq); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	// Each check names the rows it read and what each must wait for (0:
	// nothing).
	for _, q := range []struct {
		name string
		read func() (map[string]int64, error)
		want map[string]int64
	}{
		{"a commit's targets", func() (map[string]int64, error) {
			return waits(targets(ctx, tx, "g-19999", ""))
		}, map[string]int64{"g-19999": 0}},
		{"a commit's targets without a key", func() (map[string]int64, error) {
			return waits(targets(ctx, tx, "g-7", ""))
		}, map[string]int64{"g-7": 0}},
		{"a check-back commit's targets on a hot key", func() (map[string]int64, error) {
			return waits(targets(ctx, tx, "hot-19999", ""))
		}, map[string]int64{"hot-19999": seqOf("hot-19998")}},
		{"the oldest check-back commit's targets on a hot key", func() (map[string]int64, error) {
			return waits(targets(ctx, tx, "hot-0", ""))
		}, map[string]int64{"hot-0": 0}},
		{"a batch of check-back commits on a hot key", func() (map[string]int64, error) {
			got, err := waitsFor(ctx, tx, []batchRow{
				{CheckRecord: CheckRecord{Claim: Claim{seq: seqOf("hot-1")}}},
				{CheckRecord: CheckRecord{Claim: Claim{seq: seqOf("hot-15000")}}},
				{CheckRecord: CheckRecord{Claim: Claim{seq: seqOf("g-5")}}},
			})
			bySeq := map[string]int64{}
			for seq, w := range got {
				bySeq[strconv.FormatInt(seq, 10)] = w.Int64
			}
			return bySeq, err
		}, map[string]int64{
			strconv.FormatInt(seqOf("hot-1"), 10):     seqOf("hot-0"),
			strconv.FormatInt(seqOf("hot-15000"), 10): seqOf("hot-14999"),
			strconv.FormatInt(seqOf("g-5"), 10):       0,
		}},
		{"a batch of producers' commits, the latest of a hot key among them", func() (map[string]int64, error) {
			byID, err := targetsOf(ctx, tx, []*moveCall{{id: "hot-19999"}, {id: "hot-19990"}, {id: "g-5"}})
			var ts []target
			for _, t := range byID {
				ts = append(ts, t...)
			}
			return waits(ts, err)
		}, map[string]int64{"hot-19999": seqOf("hot-19998"), "hot-19990": seqOf("hot-19989"), "g-5": 0}},
		{"released rows", func() (map[string]int64, error) {
			rows, err := tx.QueryContext(ctx, releasedHalf+"?) ORDER BY seq LIMIT ?",
				halfmsg.StateCommitted, 0, halfmsg.StatePrepared, 1, 100)
			if err != nil {
				return nil, err
			}
			rs, err := relay.ScanRows(rows, 0)
			got := map[string]int64{}
			for _, r := range rs {
				got[r.ID] = 0
			}
			return got, err
		}, map[string]int64{"g-10": 0, "g-11": 0, "g-12": 0}},
	} {
		before := testenv.HandlerReads(t, tx)
		got, err := q.read()
		reads := testenv.HandlerReads(t, tx) - before
		if err != nil {
			t.Fatalf("%s: %v", q.name, err)
		}
		if !maps.Equal(got, q.want) {
			t.Errorf("%s: read %v, want %v", q.name, got, q.want)
		}
		if reads > 100 {
			t.Errorf("%s made %d row reads beside 20,000 prepared messages of its group and 20,000 of one key, want at most 100", q.name, reads)
		}
	}
}

// waits maps the ids of ts to what each waits for (0: nothing).
func waits(ts []target, err error) (map[string]int64, error) {
	got := map[string]int64{}
	for _, t := range ts {
		got[t.id] = t.waitsFor.Int64
	}
	return got, err
}
