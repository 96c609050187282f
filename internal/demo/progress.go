package demo

import (
	"fmt"
	"io"
	"os"
)

// progress prints a status line: rewritten in place on a terminal, one line
// per update otherwise.
type progress struct {
	w        io.Writer
	terminal bool
	shown    bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

func (p *progress) show(line string) {
	if p.terminal {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.shown = true
		return
	}
	fmt.Fprintln(p.w, line)
}

// note prints a line of its own.
func (p *progress) note(line string) {
	p.done()
	fmt.Fprintln(p.w, line)
}

// done ends an in-place line.
func (p *progress) done() {
	if p.terminal && p.shown {
		fmt.Fprintln(p.w)
		p.shown = false
	}
}
