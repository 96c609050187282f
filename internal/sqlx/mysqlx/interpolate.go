package mysqlx

import (
	"strings"

	"github.com/go-sql-driver/mysql"
)

// Interpolate has the driver put a statement's arguments into its text, so a
// statement with arguments is one round trip instead of three (prepare,
// execute, close): the relay's polls, probes and marking statements are
// small and many, and at 1,000 msg/s the prepares were a fifth of the
// relay's CPU and as many server commands as the statements themselves. A
// DSN that names interpolateParams keeps its choice, and a connection
// character set the driver refuses to interpolate under (Big5, GBK, SJIS:
// multibyte sets whose escaping is unsafe) keeps server-side prepares.
func Interpolate(cfg *mysql.Config, dsn string) {
	if strings.Contains(dsn, "interpolateParams=") {
		return
	}
	probe := cfg.Clone()
	probe.InterpolateParams = true
	if _, err := mysql.NewConnector(probe); err != nil {
		return
	}
	cfg.InterpolateParams = true
}
