package mysqlx

import (
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// strictSQLMode adds STRICT_ALL_TABLES to the server's sql_mode on each new
// connection: without a strict mode MySQL cuts a value too long for its
// column and goes on, and a cut message (its headers' JSON, say) can no
// longer be delivered.
const strictSQLMode = `CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')`

// Strict makes every connection of cfg run with a strict sql_mode: the
// server's own mode plus STRICT_ALL_TABLES. A cfg that sets sql_mode itself
// must name a strict mode (STRICT_ALL_TABLES, STRICT_TRANS_TABLES or
// TRADITIONAL), or Strict fails naming the setting.
func Strict(cfg *mysql.Config) error {
	if mode, ok := cfg.Params["sql_mode"]; ok {
		m := strings.ToUpper(mode)
		if !strings.Contains(m, "STRICT_ALL_TABLES") && !strings.Contains(m, "STRICT_TRANS_TABLES") &&
			!strings.Contains(m, "TRADITIONAL") {
			return fmt.Errorf("DSN sets sql_mode=%s: it must include STRICT_ALL_TABLES or STRICT_TRANS_TABLES, "+
				"or leave sql_mode out (txmsg then adds STRICT_ALL_TABLES)", mode)
		}
		return nil
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["sql_mode"] = strictSQLMode
	return nil
}
