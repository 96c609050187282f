package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/checkback"
)

// rawCall is one request to the API: the status and error code answered.
type rawCall struct {
	method, path, body string
	// token is sent as a bearer token unless empty.
	token string
	// contentType defaults to application/json when body is set; "-"
	// sends none.
	contentType string
	header      http.Header
}

func (c rawCall) do(t *testing.T, base string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	ct := c.contentType
	if ct == "" && c.body != "" {
		ct = "application/json"
	}
	if ct != "" && ct != "-" {
		req.Header.Set("Content-Type", ct)
	}
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var eb halfmsg.ErrorBody
	_ = json.Unmarshal(data, &eb)
	return resp.StatusCode, eb.Error.Code
}

// registerGroup registers group through the API with the operator's token
// and returns its credentials.
func registerGroup(t *testing.T, env *apiEnv, group string) halfmsg.Group {
	t.Helper()
	g, err := env.client.PutGroup(context.Background(), group, "http://127.0.0.1:9/"+group, false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.Token, groupTokenPrefix) || !strings.HasPrefix(g.Secret, secretPrefix) || g.Name != group {
		t.Fatalf("registration of %s answered %+v, want a token and a secret", group, g)
	}
	return g
}

// groupClient is a Client with group's token.
func groupClient(t *testing.T, env *apiEnv, g halfmsg.Group) *halfmsg.Client {
	t.Helper()
	c, err := halfmsg.NewClient(env.url, halfmsg.WithToken(g.Token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func prepareVia(t *testing.T, c *halfmsg.Client, group string) string {
	t.Helper()
	id, err := c.Prepare(context.Background(), halfmsg.PrepareRequest{ProducerGroup: group,
		Message: txmsg.Message{Topic: "t", Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestSecurityNoToken: every endpoint answers 401 without a token, with a
// wrong one and with a malformed header, and changes nothing.
func TestSecurityNoToken(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	id := prepareOne(t, env.store, halfmsg.PrepareRequest{})
	paths := []rawCall{
		{method: "POST", path: "/v1/half-messages", body: `{"producer_group":"g","topic":"t","value":"v"}`},
		{method: "POST", path: "/v1/half-messages/" + id + "/commit"},
		{method: "POST", path: "/v1/half-messages/" + id + "/rollback"},
		{method: "POST", path: "/v1/half-messages/" + id + "/resolve", body: `{"action":"commit"}`},
		{method: "GET", path: "/v1/half-messages/" + id},
		{method: "GET", path: "/v1/half-messages/" + id + "/checks"},
		{method: "GET", path: "/v1/half-messages"},
		{method: "PUT", path: "/v1/producer-groups/g", body: `{"checkback_url":"http://127.0.0.1:9/x"}`},
		{method: "GET", path: "/v1/producer-groups/g"},
		{method: "GET", path: "/v1/producer-groups"},
		{method: "DELETE", path: "/v1/producer-groups/g"},
		{method: "GET", path: "/v2/unknown"},
	}
	for _, token := range []string{"", "wrong-token-0123456789", groupTokenPrefix + strings.Repeat("0", 64), testOperatorToken + "x"} {
		for _, c := range paths {
			c.token = token
			if status, code := c.do(t, env.url); status != http.StatusUnauthorized || code != halfmsg.CodeUnauthorized {
				t.Errorf("%s %s with token %q: %d %s, want 401 unauthorized", c.method, c.path, token, status, code)
			}
		}
	}
	for _, h := range []string{"Basic dXNlcjpwYXNz", "Bearer", "Bearer  ", "Bearer " + testOperatorToken + " extra", testOperatorToken} {
		c := rawCall{method: "GET", path: "/v1/half-messages", header: http.Header{"Authorization": {h}}}
		if status, _ := c.do(t, env.url); status != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", h, status)
		}
	}
	twice := rawCall{method: "GET", path: "/v1/half-messages",
		header: http.Header{"Authorization": {"Bearer " + testOperatorToken, "Bearer " + testOperatorToken}}}
	if status, _ := twice.do(t, env.url); status != http.StatusUnauthorized {
		t.Errorf("two Authorization headers: %d, want 401", status)
	}
	anonymous, err := halfmsg.NewClient(env.url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anonymous.Commit(ctx, id); !errors.Is(err, txmsg.ErrUnauthorized) {
		t.Fatalf("Go client without a token: %v, want ErrUnauthorized", err)
	}
	if info, err := env.store.Get(ctx, id); err != nil || info.State != halfmsg.StatePrepared {
		t.Fatalf("after unauthorized calls: %+v, %v; want still prepared", info, err)
	}
	if infos, _, err := env.store.List(ctx, halfmsg.Filter{}); err != nil || len(infos) != 1 {
		t.Fatalf("unauthorized calls stored messages: %d, %v", len(infos), err)
	}
	if _, err := env.store.GroupURL(ctx, "g"); !errors.Is(err, txmsg.ErrNotFound) {
		t.Fatalf("an unauthorized PUT registered the group: %v", err)
	}
}

// TestSecurityAnotherGroupsToken: a group's token neither prepares for,
// changes nor reads another group's messages.
func TestSecurityAnotherGroupsToken(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	shop, bank := registerGroup(t, env, "shop"), registerGroup(t, env, "bank")
	sc, bc := groupClient(t, env, shop), groupClient(t, env, bank)
	shopID, bankID := prepareVia(t, sc, "shop"), prepareVia(t, bc, "bank")

	if _, err := sc.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "bank",
		Message: txmsg.Message{Topic: "t", Value: []byte("injected")}}); !errors.Is(err, txmsg.ErrForbidden) {
		t.Fatalf("shop prepares as bank: %v, want ErrForbidden", err)
	}
	// Another group's message is not found, as an unknown id: a group
	// learns nothing of another's ids.
	for name, call := range map[string]func() error{
		"commit":   func() error { _, err := sc.Commit(ctx, bankID); return err },
		"rollback": func() error { _, err := sc.Rollback(ctx, bankID); return err },
		"get":      func() error { _, err := sc.Get(ctx, bankID); return err },
	} {
		if err := call(); !errors.Is(err, txmsg.ErrNotFound) {
			t.Errorf("shop's %s of bank's message: %v, want ErrNotFound", name, err)
		}
	}
	if _, _, err := sc.List(ctx, halfmsg.Filter{ProducerGroup: "bank"}); !errors.Is(err, txmsg.ErrForbidden) {
		t.Errorf("shop lists bank's messages: %v, want ErrForbidden", err)
	}
	if status, code := (rawCall{method: "GET", path: "/v1/half-messages/" + bankID + "/checks", token: shop.Token}).do(t, env.url); status != 404 || code != halfmsg.CodeNotFound {
		t.Errorf("shop reads bank's checks: %d %s, want 404 not_found", status, code)
	}
	if info, err := env.store.Get(ctx, bankID); err != nil || info.State != halfmsg.StatePrepared {
		t.Fatalf("bank's message after shop's calls: %+v, %v", info, err)
	}
	// Its own messages, and only those, are the group's to see and change.
	list, _, err := sc.List(ctx, halfmsg.Filter{})
	if err != nil || len(list) != 1 || list[0].ID != shopID {
		t.Fatalf("shop's list: %v, %v; want only %s", list, err, shopID)
	}
	if st, err := sc.Commit(ctx, shopID); err != nil || st != halfmsg.StateCommitted {
		t.Fatalf("shop commits its own: %v, %v", st, err)
	}
	if st, err := bc.Rollback(ctx, bankID); err != nil || st != halfmsg.StateRolledBack {
		t.Fatalf("bank rolls back its own: %v, %v", st, err)
	}
}

// TestSecurityGroupsSharingAnIDSeeOnlyTheirOwn: two groups may use one id
// (in two topics); each reads and moves only its own message, and the check
// history, kept by id, goes to neither: no group reads another's answers
// by preparing its id first.
func TestSecurityGroupsSharingAnIDSeeOnlyTheirOwn(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	shop, bank := registerGroup(t, env, "shop"), registerGroup(t, env, "bank")
	sc, bc := groupClient(t, env, shop), groupClient(t, env, bank)
	if _, err := bc.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "bank",
		Message: txmsg.Message{ID: "order-1001", Topic: "squat", Value: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if status, code := (rawCall{method: "GET", path: "/v1/half-messages/order-1001/checks", token: shop.Token}).do(t, env.url); status != 404 {
		t.Errorf("shop reads the checks of bank's id: %d %s, want 404", status, code)
	}
	if _, err := sc.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "shop",
		Message: txmsg.Message{ID: "order-1001", Topic: "orders", Value: []byte("v")}}); err != nil {
		t.Fatalf("shop prepares an id bank uses in another topic: %v", err)
	}
	for name, c := range map[string]*halfmsg.Client{"shop": sc, "bank": bc} {
		if info, err := c.Get(ctx, "order-1001"); err != nil || info.ProducerGroup != name {
			t.Errorf("%s reads order-1001: %+v, %v; want its own message", name, info, err)
		}
		if status, code := (rawCall{method: "GET", path: "/v1/half-messages/order-1001/checks", token: map[string]string{"shop": shop.Token, "bank": bank.Token}[name]}).do(t, env.url); status != 409 {
			t.Errorf("%s reads the checks of a shared id: %d %s, want 409", name, status, code)
		}
	}
	if st, err := sc.Commit(ctx, "order-1001"); err != nil || st != halfmsg.StateCommitted {
		t.Fatalf("shop commits its own: %v, %v", st, err)
	}
	if info, err := bc.Get(ctx, "order-1001"); err != nil || info.State != halfmsg.StatePrepared {
		t.Fatalf("bank's message after shop's commit: %+v, %v; want still prepared", info, err)
	}
}

// TestSecurityGroupTokenOnOperatorActions: a group's token cannot resolve,
// register, change, list or delete groups, even its own.
func TestSecurityGroupTokenOnOperatorActions(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	shop := registerGroup(t, env, "shop")
	registerGroup(t, env, "bank")
	sc := groupClient(t, env, shop)
	id := prepareVia(t, sc, "shop")
	if _, err := sc.Resolve(ctx, id, true, "I say so"); !errors.Is(err, txmsg.ErrForbidden) {
		t.Fatalf("group resolves its own message: %v, want ErrForbidden", err)
	}
	for _, c := range []rawCall{
		{method: "PUT", path: "/v1/producer-groups/shop", body: `{"checkback_url":"http://127.0.0.1:9/evil"}`},
		{method: "PUT", path: "/v1/producer-groups/shop?rotate=true", body: `{"checkback_url":"http://127.0.0.1:9/shop"}`},
		{method: "PUT", path: "/v1/producer-groups/newgroup", body: `{"checkback_url":"http://127.0.0.1:9/x"}`},
		{method: "GET", path: "/v1/producer-groups"},
		{method: "GET", path: "/v1/producer-groups/bank"},
		{method: "DELETE", path: "/v1/producer-groups/shop"},
		{method: "DELETE", path: "/v1/producer-groups/bank"},
	} {
		c.token = shop.Token
		if status, code := c.do(t, env.url); status != 403 || code != halfmsg.CodeForbidden {
			t.Errorf("group token: %s %s: %d %s, want 403 forbidden", c.method, c.path, status, code)
		}
	}
	if status, _ := (rawCall{method: "GET", path: "/v1/producer-groups/shop", token: shop.Token}).do(t, env.url); status != 200 {
		t.Errorf("group reads its own registration: %d, want 200", status)
	}
	if info, _ := env.store.Get(ctx, id); info.State != halfmsg.StatePrepared {
		t.Fatalf("after a group's resolve: %s, want prepared", info.State)
	}
	gs, err := env.store.Groups(ctx)
	if err != nil || len(gs) != 2 || gs[1].CheckbackURL != "http://127.0.0.1:9/shop" {
		t.Fatalf("groups after a group's operator calls: %+v, %v", gs, err)
	}
	// The old token still works: nothing rotated it.
	if _, _, err := sc.List(ctx, halfmsg.Filter{}); err != nil {
		t.Fatalf("shop's token after its refused rotation: %v", err)
	}
}

// TestSecurityCrossOriginTextPlainPost: a page on another origin cannot
// drive the API: a text/plain body (what a form or a simple fetch sends) is
// refused with 415, a browser's cross-origin request with 403.
func TestSecurityCrossOriginTextPlainPost(t *testing.T) {
	t.Parallel()
	env := newAPIEnvWith(t, nil, []HandlerOption{WithAuthDisabled()})
	ctx := context.Background()
	body := `{"producer_group":"g","topic":"t","value":"v"}`
	for _, ct := range []string{"text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
		"multipart/form-data; boundary=x", "application/jsonx", "-"} {
		c := rawCall{method: "POST", path: "/v1/half-messages", body: body, contentType: ct}
		if status, code := c.do(t, env.url); status != http.StatusUnsupportedMediaType || code != halfmsg.CodeUnsupportedMediaType {
			t.Errorf("POST with Content-Type %q: %d %s, want 415", ct, status, code)
		}
	}
	id := prepareOne(t, env.store, halfmsg.PrepareRequest{})
	for _, h := range []http.Header{
		{"Origin": {"https://evil.example"}, "Sec-Fetch-Site": {"cross-site"}},
		{"Origin": {"https://evil.example"}},
	} {
		for _, c := range []rawCall{
			{method: "POST", path: "/v1/half-messages", body: body},
			{method: "POST", path: "/v1/half-messages/" + id + "/commit"},
		} {
			c.header = h
			if status, code := c.do(t, env.url); status != http.StatusForbidden || code != halfmsg.CodeForbidden {
				t.Errorf("cross-origin %s %s (%v): %d %s, want 403", c.method, c.path, h, status, code)
			}
		}
	}
	infos, _, err := env.store.List(ctx, halfmsg.Filter{})
	if err != nil || len(infos) != 1 || infos[0].State != halfmsg.StatePrepared {
		t.Fatalf("after cross-origin requests: %+v, %v; want one prepared message", infos, err)
	}
	// The same request as JSON from a non-browser client works.
	if status, _ := (rawCall{method: "POST", path: "/v1/half-messages", body: body}).do(t, env.url); status != http.StatusCreated {
		t.Fatalf("JSON prepare: %d, want 201", status)
	}
}

// TestSecurityRepointGroupWithoutOperatorToken: nobody but the operator
// re-points a group's check-backs, and doing so does not change its
// credentials; only a rotation does.
func TestSecurityRepointGroupWithoutOperatorToken(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	shop := registerGroup(t, env, "shop")
	evil := `{"checkback_url":"http://127.0.0.1:9/attacker"}`
	for _, token := range []string{"", shop.Token, registerGroup(t, env, "other").Token} {
		c := rawCall{method: "PUT", path: "/v1/producer-groups/shop", body: evil, token: token}
		if status, _ := c.do(t, env.url); status != 401 && status != 403 {
			t.Errorf("re-point with token %q: %d, want 401 or 403", token, status)
		}
	}
	if u, err := env.store.GroupURL(ctx, "shop"); err != nil || u != "http://127.0.0.1:9/shop" {
		t.Fatalf("shop's URL after refused re-points: %q, %v", u, err)
	}
	// The operator re-points without rotating: no credentials in the answer,
	// and the old ones still work.
	g, err := env.client.PutGroup(ctx, "shop", "http://127.0.0.1:9/moved", false)
	if err != nil || g.Token != "" || g.Secret != "" || g.CheckbackURL != "http://127.0.0.1:9/moved" {
		t.Fatalf("re-point by the operator: %+v, %v", g, err)
	}
	sc := groupClient(t, env, shop)
	if _, _, err := sc.List(ctx, halfmsg.Filter{}); err != nil {
		t.Fatalf("shop's token after a re-point: %v", err)
	}
	r, err := env.client.PutGroup(ctx, "shop", "", true)
	if err != nil || r.Token == "" || r.Token == shop.Token || r.Secret == shop.Secret || r.CheckbackURL != "http://127.0.0.1:9/moved" {
		t.Fatalf("rotation: %+v, %v", r, err)
	}
	if _, _, err := sc.List(ctx, halfmsg.Filter{}); !errors.Is(err, txmsg.ErrUnauthorized) {
		t.Fatalf("shop's old token after rotation: %v, want ErrUnauthorized", err)
	}
	var stored string
	if err := env.db.DB.QueryRowContext(ctx, `SELECT token_hash FROM txmsg_producer_groups WHERE producer_group = 'shop'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored == r.Token || stored != tokenHash(r.Token) {
		t.Fatalf("stored token %q: want the hash of the token, not the token", stored)
	}
}

// TestSecurityCheckbackURLLinkLocal: link-local and metadata addresses, and
// the other always refused ones, are refused at registration with 400
// naming the rule, whatever the policy; so are credentials in the URL.
func TestSecurityCheckbackURLLinkLocal(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	for url, rule := range map[string]string{
		"http://169.254.169.254/latest/meta-data/": "link-local",
		"http://[fe80::1%25eth0]:8080/check":       "link-local",
		"http://[fd00:ec2::254]/":                  "link-local",
		"http://[::ffff:169.254.169.254]/":         "link-local",
		"http://[64:ff9b::a9fe:a9fe]/":             "link-local", // NAT64 of 169.254.169.254
		"http://[64:ff9b:1::a9fe:a9fe]/":           "link-local",
		"http://[64:ff9b:1:a9fe:a9:fe00::]/":       "link-local", // local-use NAT64, /48 format
		"http://[2002:a9fe:a9fe::1]/":              "link-local", // 6to4
		"http://[::a9fe:a9fe]/":                    "link-local", // IPv4-compatible
		"http://0.0.0.0:3306/":                     "unspecified",
		"http://[::]:8080/":                        "unspecified",
		"http://224.0.0.1/":                        "multicast",
		"http://user:pass@shop.internal/check":     "credentials",
	} {
		for _, c := range []rawCall{
			{method: "PUT", path: "/v1/producer-groups/g", body: `{"checkback_url":"` + url + `"}`},
			{method: "POST", path: "/v1/half-messages", body: `{"producer_group":"g","topic":"t","value":"v","checkback_url":"` + url + `"}`},
		} {
			c.token = testOperatorToken
			req, _ := http.NewRequest(c.method, env.url+c.path, strings.NewReader(c.body))
			req.Header.Set("Authorization", "Bearer "+c.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(data), rule) || strings.Contains(string(data), "pass@") {
				t.Errorf("%s %s: %d %s, want 400 naming %q", c.method, url, resp.StatusCode, data, rule)
			}
		}
	}
	// At dial time too: a claim naming a metadata address is never called.
	store := &memStore{results: map[string]CheckResult{}, due: []Claim{
		{Request: checkback.Request{ID: "meta", CheckCount: 1}, URL: "http://169.254.169.254/latest/meta-data/",
			MaxChecks: 3, Interval: time.Second},
	}}
	s, err := NewScanner(store, ScannerConfig{Policy: loopback(), CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if class := checkErrorClass(store.results["meta"].Err); !strings.HasPrefix(class, "blocked: link-local") {
		t.Fatalf("check of a metadata URL: %q (%v), want blocked", class, store.results["meta"].Err)
	}
}

// hitCounter is a server that counts the requests reaching it.
func hitCounter(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{"state":"rollback"}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// scanOne checks one claim through a scanner with policy and returns the
// recorded classification of its error ("" without one).
func scanOne(t *testing.T, policy AddressPolicy, c Claim) string {
	t.Helper()
	c.CheckCount, c.MaxChecks, c.Interval = 1, 3, time.Second
	store := &memStore{results: map[string]CheckResult{}, due: []Claim{c}}
	s, err := NewScanner(store, ScannerConfig{Policy: policy, CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := store.results[c.ID].Err; err != nil {
		return checkErrorClass(err)
	}
	return ""
}

// TestSecurityCheckbackURLLoopbackWithoutAllow: without
// checkback.allow_loopback, loopback is refused at registration and at
// dial; allow_hosts does not lift the rule.
func TestSecurityCheckbackURLLoopbackWithoutAllow(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t, WithAddressPolicy(AddressPolicy{}))
	target, hits := hitCounter(t)
	ctx := context.Background()
	for _, url := range []string{target.URL + "/check", "http://127.0.0.2:3306/", "http://[::1]:8080/"} {
		if _, err := env.client.PutGroup(ctx, "g", url, false); !errors.Is(err, txmsg.ErrInvalidMessage) || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("register %s: %v, want 400 naming loopback", url, err)
		}
	}
	for _, policy := range []AddressPolicy{{}, {AllowHosts: []string{"127.0.0.1", "127.0.0.0/8"}}} {
		if class := scanOne(t, policy, Claim{Request: checkback.Request{ID: "m"}, URL: target.URL}); !strings.HasPrefix(class, "blocked: loopback") {
			t.Errorf("policy %+v: check of a loopback URL recorded %q, want blocked", policy, class)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback service was called %d times", n)
	}
	// With allow_loopback the same check goes through.
	if class := scanOne(t, loopback(), Claim{Request: checkback.Request{ID: "m"}, URL: target.URL}); class != "" || hits.Load() != 1 {
		t.Fatalf("with allow_loopback: %q, %d calls", class, hits.Load())
	}
}

// TestSecurityCheckbackNameResolvingToLoopback: a host name is refused for
// the addresses it resolves to, at registration and at dial, and names
// outside checkback.allow_hosts are refused.
func TestSecurityCheckbackNameResolvingToLoopback(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t, WithAddressPolicy(AddressPolicy{}))
	target, hits := hitCounter(t)
	byName := strings.Replace(target.URL, "127.0.0.1", "localhost", 1)
	if _, err := env.client.PutGroup(context.Background(), "g", byName, false); !errors.Is(err, txmsg.ErrInvalidMessage) || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("register %s: %v, want 400 naming loopback", byName, err)
	}
	for _, policy := range []AddressPolicy{{}, {AllowHosts: []string{"localhost"}}} {
		if class := scanOne(t, policy, Claim{Request: checkback.Request{ID: "m"}, URL: byName}); !strings.HasPrefix(class, "blocked: loopback") {
			t.Errorf("policy %+v: check of %s recorded %q, want blocked", policy, byName, class)
		}
	}
	// allow_hosts: a host not listed is refused; a listed one passes.
	allowOther := AddressPolicy{AllowLoopback: true, AllowHosts: []string{"shop.internal", "10.0.0.0/8"}}
	if class := scanOne(t, allowOther, Claim{Request: checkback.Request{ID: "m"}, URL: byName}); class != "blocked: "+ruleNotAllowed {
		t.Errorf("host outside allow_hosts: recorded %q", class)
	}
	if hits.Load() != 0 {
		t.Fatalf("the service behind localhost was called %d times", hits.Load())
	}
	allowLocal := AddressPolicy{AllowLoopback: true, AllowHosts: []string{"localhost"}}
	if class := scanOne(t, allowLocal, Claim{Request: checkback.Request{ID: "m"}, URL: byName}); class != "" || hits.Load() != 1 {
		t.Errorf("host in allow_hosts: recorded %q, %d calls", class, hits.Load())
	}
	store, err := NewStore(env.db.DB, WithAddressPolicy(AddressPolicy{AllowHosts: []string{"shop.internal"}}))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetGroup(context.Background(), "g", "http://bank.internal/check"); err == nil || !strings.Contains(err.Error(), "allow_hosts") {
		t.Fatalf("register a host outside allow_hosts: %v", err)
	}
}

// TestSecurityRedirectingProducer: the broker follows no redirect, and what
// a producer's host answers never reaches the API: the check records a
// short classification.
func TestSecurityRedirectingProducer(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	internal, hits := hitCounter(t)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/admin", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirect.Close)
	const leak = "root:x:0:0:internal-service-secret"
	chatty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/503" {
			http.Error(w, leak, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(leak))
	}))
	t.Cleanup(chatty.Close)
	scanner := testScanner(t, env.store, ScannerConfig{})
	for url, want := range map[string]string{
		redirect.URL:        "http_status 307",
		chatty.URL + "/503": "http_status 503",
		chatty.URL + "/200": "bad_answer",
	} {
		id := prepareOne(t, env.store, halfmsg.PrepareRequest{CheckbackURL: url, CheckTimeout: time.Millisecond, MaxChecks: 1})
		info := waitState(t, env.store, scanner, id, halfmsg.StateDiscarded, 10*time.Second)
		if info.LastCheckError != want {
			t.Errorf("%s: recorded %q, want %q", url, info.LastCheckError, want)
		}
		for _, path := range []string{"/v1/half-messages/" + id, "/v1/half-messages/" + id + "/checks"} {
			req, _ := http.NewRequest("GET", env.url+path, nil)
			req.Header.Set("Authorization", "Bearer "+testOperatorToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if bytes.Contains(data, []byte("internal-service-secret")) || !bytes.Contains(data, []byte(want)) {
				t.Errorf("GET %s: %s", path, data)
			}
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the redirect was followed %d times", n)
	}
	if _, err := env.store.Get(ctx, "none"); !errors.Is(err, txmsg.ErrNotFound) {
		t.Fatal(err)
	}
}
