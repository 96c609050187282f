package migrations

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"

	"github.com/golang-migrate/migrate/v4/source"
)

//go:embed *.sql
var files embed.FS

// FS returns the embedded migration files, for users who run them with their
// own copy of golang-migrate (or copy them into another tool).
func FS() fs.FS { return files }

// Migration is one numbered schema change: the files
// NNNN_name.up.sql and NNNN_name.down.sql.
type Migration struct {
	Version int
	Name    string
}

// String returns the migration as the CLI prints it: "0001_outbox".
func (m Migration) String() string { return fmt.Sprintf("%04d_%s", m.Version, m.Name) }

// All returns the embedded migrations in version order.
func All() ([]Migration, error) { return list(files) }

// list returns the migrations in fsys in version order; each needs both its
// up and its down file.
func list(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("migrations: read files: %w", err)
	}
	type pair struct {
		m        Migration
		up, down bool
	}
	byVersion := map[int]*pair{}
	for _, e := range entries {
		f, err := source.DefaultParse(e.Name())
		if err != nil {
			continue // not a migration file
		}
		v := int(f.Version)
		p := byVersion[v]
		if p == nil {
			p = &pair{m: Migration{Version: v, Name: f.Identifier}}
			byVersion[v] = p
		}
		if p.m.Name != f.Identifier {
			return nil, fmt.Errorf("migrations: version %d has two names, %s and %s", v, p.m.Name, f.Identifier)
		}
		p.up = p.up || f.Direction == source.Up
		p.down = p.down || f.Direction == source.Down
	}
	out := make([]Migration, 0, len(byVersion))
	for _, p := range byVersion {
		if !p.up || !p.down {
			return nil, fmt.Errorf("migrations: version %d lacks its up or down file", p.m.Version)
		}
		out = append(out, p.m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}
