package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/testenv"
)

// Ids compare byte for byte: "Order-1" and "order-1" are two messages.
func TestBrokerIDsAreCaseSensitive(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	for _, id := range []string{"Order-1", "order-1"} {
		prepareOne(t, env.store, halfmsg.PrepareRequest{Message: txmsg.Message{ID: id, Value: []byte(id)}})
	}
	if _, err := env.store.Commit(ctx, "order-1"); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]halfmsg.State{"Order-1": halfmsg.StatePrepared, "order-1": halfmsg.StateCommitted} {
		if info, err := env.store.Get(ctx, id); err != nil || info.State != want || info.ID != id {
			t.Fatalf("%s: %+v (%v), want %s", id, info, err, want)
		}
	}
	if _, err := env.store.Commit(ctx, "ORDER-1"); !errors.Is(err, txmsg.ErrNotFound) {
		t.Fatalf("commit ORDER-1 = %v, want ErrNotFound", err)
	}
}

// Producer groups compare byte for byte: "Shop2" and "shop2" are two
// groups, each asked at its own check-back URL.
func TestBrokerGroupsAreCaseSensitive(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	if err := env.client.SetGroup(ctx, "Shop2", "http://127.0.0.1:1/upper"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.store.GroupURL(ctx, "shop2"); !errors.Is(err, txmsg.ErrNotFound) {
		t.Fatalf("group shop2 before it is registered: %v, want ErrNotFound", err)
	}
	if err := env.client.SetGroup(ctx, "shop2", "http://127.0.0.1:1/lower"); err != nil {
		t.Fatal(err)
	}
	for group, want := range map[string]string{"Shop2": "http://127.0.0.1:1/upper", "shop2": "http://127.0.0.1:1/lower"} {
		if u, err := env.store.GroupURL(ctx, group); err != nil || u != want {
			t.Fatalf("group %s: %q (%v), want %q", group, u, err, want)
		}
	}
	for _, group := range []string{"Shop2", "shop2"} {
		prepareOne(t, env.store, halfmsg.PrepareRequest{ProducerGroup: group, Message: txmsg.Message{ID: "m-" + group},
			CheckTimeout: time.Millisecond})
	}
	urls := map[string]string{}
	for _, c := range claimAll(t, env.store, 2) {
		urls[c.ProducerGroup] = c.URL
	}
	if urls["Shop2"] != "http://127.0.0.1:1/upper" || urls["shop2"] != "http://127.0.0.1:1/lower" {
		t.Fatalf("claims ask %v", urls)
	}
}

// One id may name messages of several topics (the fan-out of one local
// transaction): each is prepared once, commit and rollback act on all, and
// a check-back answer settles only the message it was asked about.
func TestBrokerOneIDSeveralTopics(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	topics := []string{"orders", "billing", "audit"}
	for _, topic := range topics {
		id, err := env.client.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g",
			Message: txmsg.Message{ID: "evt-1", Topic: topic, Key: []byte("k"), Value: []byte(topic)}})
		if err != nil || id != "evt-1" {
			t.Fatalf("prepare evt-1 in %s: %q %v", topic, id, err)
		}
	}
	if _, err := env.client.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g",
		Message: txmsg.Message{ID: "evt-1", Topic: "billing", Value: []byte("again")}}); !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("evt-1 in billing again: %v, want ErrConflict", err)
	}
	if st, err := env.client.Commit(ctx, "evt-1"); err != nil || st != halfmsg.StateCommitted {
		t.Fatalf("commit evt-1: %s %v", st, err)
	}
	if st, err := env.client.Commit(ctx, "evt-1"); err != nil || st != halfmsg.StateCommitted {
		t.Fatalf("commit evt-1 again: %s %v", st, err)
	}
	if _, err := env.client.Rollback(ctx, "evt-1"); !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("rollback of committed evt-1: %v, want ErrConflict", err)
	}
	infos, _, err := env.client.List(ctx, halfmsg.Filter{State: halfmsg.StateCommitted})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range infos {
		got = append(got, i.ID+"@"+i.Topic)
	}
	sort.Strings(got)
	if strings.Join(got, " ") != "evt-1@audit evt-1@billing evt-1@orders" {
		t.Fatalf("committed: %v", got)
	}
	if info, err := env.client.Get(ctx, "evt-1"); err != nil || info.Topic != "orders" {
		t.Fatalf("get evt-1: %+v %v, want the first prepared (orders)", info, err)
	}

	// Check-back settles each topic's message on its own.
	for _, topic := range topics[:2] {
		prepareOne(t, env.store, halfmsg.PrepareRequest{Message: txmsg.Message{ID: "evt-2", Topic: topic}, CheckTimeout: time.Millisecond})
	}
	claims := claimAll(t, env.store, 2)
	if err := env.store.RecordCheck(ctx, claims[0], CheckResult{Answer: checkback.AnswerRollback}); err != nil {
		t.Fatal(err)
	}
	states := map[string]halfmsg.State{}
	all, _, err := env.store.List(ctx, halfmsg.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range all {
		if i.ID == "evt-2" {
			states[i.Topic] = i.State
		}
	}
	if states[claims[0].Topic] != halfmsg.StateRolledBack || states[claims[1].Topic] != halfmsg.StatePrepared {
		t.Fatalf("after a rollback answer for %s: %v", claims[0].Topic, states)
	}
}

// claimAll claims due checks until n are claimed.
func claimAll(t *testing.T, store *Store, n int) []Claim {
	t.Helper()
	var claims []Claim
	testenv.Eventually(t, 10*time.Second, func() error {
		cs, err := store.ClaimDue(context.Background(), n, time.Minute)
		if err != nil {
			return err
		}
		if claims = append(claims, cs...); len(claims) < n {
			return fmt.Errorf("claimed %d of %d", len(claims), n)
		}
		return nil
	})
	return claims
}
