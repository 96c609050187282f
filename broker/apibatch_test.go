package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/testenv"
)

// postBatch sends body to a batch endpoint with token and returns the
// status, the error code of a refused request and the per-message results.
func postBatch(t *testing.T, env *apiEnv, path, token string, body any) (int, string, []halfmsg.ItemResult) {
	t.Helper()
	var raw []byte
	switch b := body.(type) {
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(http.MethodPost, env.url+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		halfmsg.BatchBody
		Error halfmsg.ErrorDetail `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s: decode answer (HTTP %d): %v", path, resp.StatusCode, err)
	}
	return resp.StatusCode, out.Error.Code, out.Results
}

func prepareItem(group, id string) halfmsg.PrepareBody {
	return halfmsg.NewPrepareBody(halfmsg.PrepareRequest{ProducerGroup: group,
		Message: txmsg.Message{ID: id, Topic: "t", Key: []byte(id), Value: []byte("v")}})
}

// checkResults compares results with want: per message, its status and
// error code.
func checkResults(t *testing.T, what string, got []halfmsg.ItemResult, want []halfmsg.ItemResult) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d results, want %d: %+v", what, len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		code := ""
		if g.Error != nil {
			code = g.Error.Code
		}
		wcode := ""
		if w.Error != nil {
			wcode = w.Error.Code
		}
		if g.Status != w.Status || code != wcode || g.ID != w.ID || g.State != w.State {
			t.Errorf("%s: result %d = %+v (code %q), want status %d, code %q, id %q, state %v", what, i, g, code, w.Status, wcode, w.ID, w.State)
		}
	}
}

func errResult(id string, status int, code string) halfmsg.ItemResult {
	return halfmsg.ItemResult{ID: id, Status: status, Error: &halfmsg.ErrorDetail{Code: code}}
}

// TestBrokerAPIBatchAnswersEachMessage: a batch with a duplicate id,
// another group's message, an invalid one and a message past the group's
// bound (5: dup, then a, b, c, d fill it; dup again takes no room) answers
// each on its own with the single call's status and code,
// prepares the others, and an end batch likewise commits and rolls back
// each message the group's token may, logging each change once in the
// audit log.
func TestBrokerAPIBatchAnswersEachMessage(t *testing.T) {
	t.Parallel()
	logs := &testenv.LogBuffer{}
	env := newAPIEnvWith(t, []StoreOption{WithStoreLogger(slog.New(slog.NewJSONHandler(logs, nil)))},
		[]HandlerOption{WithOperatorToken(testOperatorToken), WithMaxPreparedPerGroup(5)})
	ctx := context.Background()
	g := registerGroup(t, env, "shop")
	registerGroup(t, env, "other")
	if _, err := env.client.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "other",
		Message: txmsg.Message{ID: "theirs", Topic: "t", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.client.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "shop",
		Message: txmsg.Message{ID: "dup", Topic: "t", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	noValue := prepareItem("shop", "novalue")
	noValue.Value = nil
	status, code, res := postBatch(t, env, "/v1/half-messages:prepare-batch", g.Token, halfmsg.PrepareBatchBody{Messages: []halfmsg.PrepareBody{
		prepareItem("shop", "a"), prepareItem("shop", "dup"), prepareItem("other", "x"), noValue,
		prepareItem("shop", "b"), prepareItem("shop", "c"), prepareItem("shop", "d"), prepareItem("shop", "over"),
	}})
	if status != http.StatusOK || code != "" {
		t.Fatalf("prepare batch: HTTP %d %q, want 200", status, code)
	}
	checkResults(t, "prepare batch", res, []halfmsg.ItemResult{
		{ID: "a", State: halfmsg.StatePrepared, Status: http.StatusCreated},
		errResult("dup", http.StatusConflict, halfmsg.CodeConflict),
		errResult("x", http.StatusForbidden, halfmsg.CodeForbidden),
		errResult("novalue", http.StatusBadRequest, halfmsg.CodeInvalidRequest),
		{ID: "b", State: halfmsg.StatePrepared, Status: http.StatusCreated},
		{ID: "c", State: halfmsg.StatePrepared, Status: http.StatusCreated},
		{ID: "d", State: halfmsg.StatePrepared, Status: http.StatusCreated},
		errResult("over", http.StatusTooManyRequests, halfmsg.CodeTooManyPrepared),
	})
	if _, err := env.store.Get(ctx, "x"); err == nil {
		t.Error("the forbidden message was prepared")
	}

	status, code, res = postBatch(t, env, "/v1/half-messages:end-batch", g.Token, halfmsg.EndBatchBody{Messages: []halfmsg.EndItem{
		{ID: "a", Action: "commit"}, {ID: "b", Action: "rollback"}, {ID: "theirs", Action: "commit"},
		{ID: "nope", Action: "commit"}, {ID: "c", Action: "publish"}, {ID: "a", Action: "commit"},
		{ID: "b", Action: "commit"}, {ID: "d", Action: "commit"},
	}})
	if status != http.StatusOK || code != "" {
		t.Fatalf("end batch: HTTP %d %q, want 200", status, code)
	}
	checkResults(t, "end batch", res, []halfmsg.ItemResult{
		{ID: "a", State: halfmsg.StateCommitted, Status: http.StatusOK},
		{ID: "b", State: halfmsg.StateRolledBack, Status: http.StatusOK},
		errResult("theirs", http.StatusNotFound, halfmsg.CodeNotFound),
		errResult("nope", http.StatusNotFound, halfmsg.CodeNotFound),
		errResult("c", http.StatusBadRequest, halfmsg.CodeInvalidRequest),
		{ID: "a", State: halfmsg.StateCommitted, Status: http.StatusOK},
		errResult("b", http.StatusConflict, halfmsg.CodeConflict),
		{ID: "d", State: halfmsg.StateCommitted, Status: http.StatusOK},
	})
	for id, want := range map[string]halfmsg.State{"a": halfmsg.StateCommitted, "b": halfmsg.StateRolledBack,
		"c": halfmsg.StatePrepared, "d": halfmsg.StateCommitted, "theirs": halfmsg.StatePrepared} {
		if info, err := env.store.Get(ctx, id); err != nil || info.State != want {
			t.Errorf("%s: %v, %v; want %v", id, info.State, err, want)
		}
	}
	audit := map[string]int{}
	for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		var e struct{ Msg, Actor, MsgID string }
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || !strings.HasPrefix(fmt.Sprint(m["msg"]), "broker: audit: half message") {
			continue
		}
		e.Msg, e.Actor, e.MsgID = fmt.Sprint(m["msg"]), fmt.Sprint(m["actor"]), fmt.Sprint(m["msg_id"])
		if e.Actor != "group shop" {
			t.Errorf("audit line by %q, want group shop: %s", e.Actor, line)
		}
		audit[e.MsgID+" "+strings.TrimPrefix(e.Msg, "broker: audit: half message ")]++
	}
	if want := map[string]int{"a committed": 1, "b rolled_back": 1, "d committed": 1}; fmt.Sprint(audit) != fmt.Sprint(want) {
		t.Errorf("audit log %v, want %v", audit, want)
	}
}

// TestBrokerAPIBatchLimits: a batch request that is itself wrong is refused
// as a whole, naming what is wrong: no token, no messages, too many, a body
// over the limit, not JSON, unknown fields.
func TestBrokerAPIBatchLimits(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	many := halfmsg.EndBatchBody{}
	for i := range halfmsg.MaxBatchItems + 1 {
		many.Messages = append(many.Messages, halfmsg.EndItem{ID: fmt.Sprint("m", i), Action: "commit"})
	}
	big := halfmsg.PrepareBatchBody{}
	for i := range 40 { // 40 × 2 KiB > the tests' 64 KiB body limit
		b := prepareItem("g", fmt.Sprint("m", i))
		v := strings.Repeat("x", 2<<10)
		b.Value = &v
		big.Messages = append(big.Messages, b)
	}
	for _, c := range []struct {
		name, path, token string
		body              any
		status            int
		code, mention     string
	}{
		{"no token", "/v1/half-messages:end-batch", "", many, http.StatusUnauthorized, halfmsg.CodeUnauthorized, ""},
		{"empty", "/v1/half-messages:end-batch", testOperatorToken, halfmsg.EndBatchBody{}, http.StatusBadRequest, halfmsg.CodeInvalidRequest, "empty"},
		{"too many", "/v1/half-messages:end-batch", testOperatorToken, many, http.StatusBadRequest, halfmsg.CodeInvalidRequest, "129 messages"},
		{"too many prepares", "/v1/half-messages:prepare-batch", testOperatorToken, halfmsg.PrepareBatchBody{Messages: make([]halfmsg.PrepareBody, 129)},
			http.StatusBadRequest, halfmsg.CodeInvalidRequest, "at most 128"},
		{"too large", "/v1/half-messages:prepare-batch", testOperatorToken, big, http.StatusRequestEntityTooLarge, halfmsg.CodeTooLarge, "fewer messages"},
		{"unknown field", "/v1/half-messages:end-batch", testOperatorToken, `{"messages":[{"id":"a","action":"commit","x":1}]}`,
			http.StatusBadRequest, halfmsg.CodeInvalidRequest, "unknown field"},
		{"not an object", "/v1/half-messages:prepare-batch", testOperatorToken, `[]`, http.StatusBadRequest, halfmsg.CodeInvalidRequest, ""},
		{"GET", "", "", nil, http.StatusMethodNotAllowed, halfmsg.CodeMethodNotAllowed, ""},
	} {
		if c.name == "GET" {
			if st, code := (rawCall{method: http.MethodGet, path: "/v1/half-messages:end-batch", token: testOperatorToken}).do(t, env.url); st != c.status || code != c.code {
				t.Errorf("%s: HTTP %d %q, want %d %q", c.name, st, code, c.status, c.code)
			}
			continue
		}
		req, _ := json.Marshal(c.body)
		if s, ok := c.body.(string); ok {
			req = []byte(s)
		}
		hreq, err := http.NewRequest(http.MethodPost, env.url+c.path, bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		hreq.Header.Set("Content-Type", "application/json")
		if c.token != "" {
			hreq.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(hreq)
		if err != nil {
			t.Fatal(err)
		}
		var eb halfmsg.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != c.status || eb.Error.Code != c.code || !strings.Contains(eb.Error.Message, c.mention) {
			t.Errorf("%s: HTTP %d %q %q, want %d %q mentioning %q", c.name, resp.StatusCode, eb.Error.Code, eb.Error.Message, c.status, c.code, c.mention)
		}
	}
	if st, code := (rawCall{method: http.MethodPost, path: "/v1/half-messages:end-batch", token: testOperatorToken,
		body: `{"messages":[]}`, contentType: "text/plain"}).do(t, env.url); st != http.StatusUnsupportedMediaType || code != halfmsg.CodeUnsupportedMediaType {
		t.Errorf("text/plain: HTTP %d %q, want 415", st, code)
	}
	if n, _, err := env.store.PreparedBacklog(context.Background()); err != nil || n != 0 {
		t.Errorf("refused batches prepared %d messages (%v)", n, err)
	}
}
