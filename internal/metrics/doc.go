// Package metrics serves every daemon's HTTP endpoints: GET /healthz (the
// process is alive), GET /readyz (200 once the daemon is ready, 503 before
// and during shutdown) and GET /metrics (Prometheus text format, from the
// registry NewRegistry builds). The collectors themselves live in the public
// package txmsgprom.
package metrics
