package broker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
)

func TestBrokerAPIPrepareCommitRollback(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	c := env.client

	id, err := c.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "orders",
		Message: txmsg.Message{Topic: "orders", Key: []byte("k1"), Value: []byte("v1"),
			Headers: []txmsg.Header{{Key: "trace", Value: []byte("t1")}}}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != halfmsg.StatePrepared || info.ProducerGroup != "orders" || string(info.Key) != "k1" ||
		info.CheckTimeout != DefaultCheckTimeout || info.MaxChecks != DefaultMaxChecks || info.NextCheckAt.IsZero() {
		t.Fatalf("after prepare: %+v", info)
	}
	for range 3 { // idempotent
		st, err := c.Commit(ctx, id)
		if err != nil || st != halfmsg.StateCommitted {
			t.Fatalf("commit: %v, %v", st, err)
		}
	}
	if _, err := c.Rollback(ctx, id); !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("rollback after commit: %v, want ErrConflict", err)
	}
	var ae *halfmsg.APIError
	if _, err := c.Rollback(ctx, id); !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Code != halfmsg.CodeConflict {
		t.Fatalf("rollback after commit: %#v", err)
	}

	id2, err := c.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "orders", Message: txmsg.Message{ID: "m-2", Topic: "orders", Value: []byte{0xff, 0x00}}})
	if err != nil || id2 != "m-2" {
		t.Fatalf("prepare with id: %q, %v", id2, err)
	}
	if _, err := c.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "orders", Message: txmsg.Message{ID: "m-2", Topic: "orders", Value: []byte("x")}}); !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("prepare with a used id: %v, want ErrConflict", err)
	}
	for range 2 {
		if st, err := c.Rollback(ctx, id2); err != nil || st != halfmsg.StateRolledBack {
			t.Fatalf("rollback: %v, %v", st, err)
		}
	}
	if _, err := c.Commit(ctx, id2); !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("commit after rollback: %v, want ErrConflict", err)
	}
	if info, _ := c.Get(ctx, id2); info.State != halfmsg.StateRolledBack {
		t.Fatalf("commit after rollback changed the state to %s", info.State)
	}
	if _, err := c.Resolve(ctx, id2, true, ""); !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("resolve commit of a rolled back message: %v, want ErrConflict", err)
	}

	for _, call := range []func() error{
		func() error { _, err := c.Commit(ctx, "nope"); return err },
		func() error { _, err := c.Rollback(ctx, "nope"); return err },
		func() error { _, err := c.Get(ctx, "nope"); return err },
		func() error { _, err := c.Resolve(ctx, "nope", false, ""); return err },
	} {
		if err := call(); !errors.Is(err, txmsg.ErrNotFound) {
			t.Fatalf("unknown id: %v, want ErrNotFound", err)
		}
	}
}

func TestBrokerAPIBadRequests(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	big := strings.Repeat("x", 70<<10)
	tests := []struct {
		name, method, path, body string
		status                   int
		code, message            string
	}{
		{"unknown field", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"t","value":"v","colour":1}`, 400, halfmsg.CodeInvalidRequest, "unknown field"},
		{"missing topic", "POST", "/v1/half-messages", `{"producer_group":"g","value":"v"}`, 400, halfmsg.CodeInvalidRequest, "empty topic"},
		{"bad topic", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"a b","value":"v"}`, 400, halfmsg.CodeInvalidRequest, "topic"},
		{"missing group", "POST", "/v1/half-messages", `{"topic":"t","value":"v"}`, 400, halfmsg.CodeInvalidRequest, "producer_group"},
		{"missing value", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"t"}`, 400, halfmsg.CodeInvalidRequest, "value"},
		{"both values", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"t","value":"v","value_base64":"dg=="}`, 400, halfmsg.CodeInvalidRequest, "not both"},
		{"bad base64", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"t","value_base64":"!!"}`, 400, halfmsg.CodeInvalidRequest, "base64"},
		{"reserved header", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"t","value":"v","headers":{"txmsg-id":"x"}}`, 400, halfmsg.CodeInvalidRequest, "reserved"},
		{"headers too large to store", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"t","value":"v","headers":{"h":"` + strings.Repeat("h", 50000) + `"}}`, 400, halfmsg.CodeInvalidRequest, "headers take"},
		{"bad check timeout", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"t","value":"v","check_timeout":"soon"}`, 400, halfmsg.CodeInvalidRequest, "check_timeout"},
		{"bad max checks", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"t","value":"v","max_checks":5000}`, 400, halfmsg.CodeInvalidRequest, "max_checks"},
		{"bad checkback url", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"t","value":"v","checkback_url":"ftp://x"}`, 400, halfmsg.CodeInvalidRequest, "checkback_url"},
		{"not json", "POST", "/v1/half-messages", `topic=t`, 400, halfmsg.CodeInvalidRequest, "bad JSON"},
		{"empty body", "POST", "/v1/half-messages", ``, 400, halfmsg.CodeInvalidRequest, "empty body"},
		{"trailing data", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"t","value":"v"} {}`, 400, halfmsg.CodeInvalidRequest, "after the object"},
		{"oversize body", "POST", "/v1/half-messages", `{"producer_group":"g","topic":"t","value":"` + big + `"}`, 413, halfmsg.CodeTooLarge, "limit"},
		{"bad state filter", "GET", "/v1/half-messages?state=lost", ``, 400, halfmsg.CodeInvalidRequest, "unknown state"},
		{"bad limit", "GET", "/v1/half-messages?limit=0", ``, 400, halfmsg.CodeInvalidRequest, "limit"},
		{"bad cursor", "GET", "/v1/half-messages?cursor=x", ``, 400, halfmsg.CodeInvalidRequest, "cursor"},
		{"bad resolve action", "POST", "/v1/half-messages/x/resolve", `{"action":"maybe"}`, 400, halfmsg.CodeInvalidRequest, "action"},
		{"bad group url", "PUT", "/v1/producer-groups/g", `{"checkback_url":"nope"}`, 400, halfmsg.CodeInvalidRequest, "checkback_url"},
		{"unknown group", "GET", "/v1/producer-groups/none", ``, 404, halfmsg.CodeNotFound, "not found"},
		{"unknown id", "GET", "/v1/half-messages/none", ``, 404, halfmsg.CodeNotFound, "not found"},
		{"unknown path", "GET", "/v2/things", ``, 404, halfmsg.CodeNotFound, "no such endpoint"},
		{"wrong method", "DELETE", "/v1/half-messages/x", ``, 405, halfmsg.CodeMethodNotAllowed, "not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, env.url+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+testOperatorToken)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			var eb halfmsg.ErrorBody
			if err := json.Unmarshal(data, &eb); err != nil {
				t.Fatalf("status %d, body %q: not a JSON error: %v", resp.StatusCode, data, err)
			}
			if resp.StatusCode != tc.status || eb.Error.Code != tc.code || !strings.Contains(eb.Error.Message, tc.message) {
				t.Fatalf("got %d %s %q; want %d %s containing %q", resp.StatusCode, eb.Error.Code, eb.Error.Message, tc.status, tc.code, tc.message)
			}
		})
	}
	// Nothing above was stored.
	infos, _, err := env.store.List(context.Background(), halfmsg.Filter{})
	if err != nil || len(infos) != 0 {
		t.Fatalf("bad requests stored %d messages (%v)", len(infos), err)
	}
}

func TestBrokerAPIListAndGroups(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	c := env.client
	if err := c.SetGroup(ctx, "g1", "http://127.0.0.1:1/check"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetGroup(ctx, "g1", "http://127.0.0.1:2/check"); err != nil {
		t.Fatal(err)
	}
	if u, err := env.store.GroupURL(ctx, "g1"); err != nil || u != "http://127.0.0.1:2/check" {
		t.Fatalf("group url %q, %v", u, err)
	}
	var ids []string
	for i := range 7 {
		group := "g1"
		if i%2 == 1 {
			group = "g2"
		}
		id, err := c.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: group, Message: txmsg.Message{Topic: "t", Value: []byte("v")}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if _, err := c.Commit(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	var got []string
	var cursor int64
	pages := 0
	for {
		page, next, err := c.List(ctx, halfmsg.Filter{State: halfmsg.StatePrepared, Limit: 2, After: cursor})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, m := range page {
			got = append(got, m.ID)
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	if strings.Join(got, ",") != strings.Join(ids[1:], ",") || pages != 3 {
		t.Fatalf("paged prepared list %v in %d pages, want %v in 3", got, pages, ids[1:])
	}
	g2, _, err := c.List(ctx, halfmsg.Filter{ProducerGroup: "g2"})
	if err != nil || len(g2) != 3 {
		t.Fatalf("group filter: %d messages, %v", len(g2), err)
	}
}
