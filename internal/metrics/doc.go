// Package metrics adapts the engines' metrics hooks (relay.Metrics and the
// others) to Prometheus, and serves every daemon's HTTP endpoints: GET
// /healthz (the process is alive), GET /readyz (200 once the daemon is
// ready, 503 before and during shutdown) and GET /metrics (Prometheus text
// format). Every metric is prefixed txmsg_.
//
// It is the only package besides cmd that imports the Prometheus client: the
// SDK and engine packages report through small hook interfaces.
package metrics
