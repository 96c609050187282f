package txmsg_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSDKDependencies keeps the SDK packages light: a service that imports
// them must not link the daemons' libraries, and the producer side of half
// messages links nothing but the standard library and txmsg itself. It asks
// the go tool for each package's whole dependency closure.
func TestSDKDependencies(t *testing.T) {
	t.Parallel()
	const module = "github.com/txmsg/txmsg"
	daemonOnly := []string{"github.com/spf13/viper", "github.com/robfig/cron", "github.com/prometheus/",
		module + "/relay", module + "/broker\n", module + "/internal/config", module + "/internal/metrics"}
	tests := []struct {
		pkg string
		// allowed lists the only non-standard prefixes the closure may hold;
		// nil means anything but daemonOnly.
		allowed []string
	}{
		{pkg: "./broker/halfmsg", allowed: []string{module, "vendor/"}},
		{pkg: "./checkback", allowed: []string{module, "vendor/"}},
		{pkg: "./checkback/checkbacktest", allowed: []string{module, "vendor/"}},
		{pkg: "./outbox"},
		{pkg: "./consumer"},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.pkg, "./"), func(t *testing.T) {
			t.Parallel()
			out, err := exec.Command("go", "list", "-deps", tt.pkg).Output()
			if err != nil {
				t.Fatalf("go list -deps %s: %v", tt.pkg, err)
			}
			deps := string(out)
			for _, bad := range daemonOnly {
				if strings.Contains(deps, bad) {
					t.Errorf("%s depends on %s", tt.pkg, strings.TrimSpace(bad))
				}
			}
			if tt.allowed == nil {
				return
			}
			for _, dep := range strings.Fields(deps) {
				if !strings.Contains(strings.SplitN(dep, "/", 2)[0], ".") {
					continue // the standard library
				}
				ok := false
				for _, prefix := range tt.allowed {
					ok = ok || strings.HasPrefix(dep, prefix)
				}
				if !ok {
					t.Errorf("%s depends on %s; it may link only the standard library and %s", tt.pkg, dep, module)
				}
			}
		})
	}
}
