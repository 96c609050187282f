package config

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// reloadDelay lets an editor finish a multi-step save before the file is
// read again.
const reloadDelay = 100 * time.Millisecond

// Watch re-reads the configuration file whenever it changes and passes each
// valid result to fn; an invalid file is logged and the running
// configuration kept. Flags and the environment keep their precedence over
// the file. Watch blocks until ctx ends and returns nil then; it returns at
// once when no file is configured, and an error when the file's directory
// cannot be watched. fn runs on Watch's goroutine.
func (l *Loader[T]) Watch(ctx context.Context, log *slog.Logger, fn func(T)) error {
	path := l.File()
	if path == "" {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("config: watch %s: %w", path, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("config: watch %s: %w", path, err)
	}
	defer w.Close()
	// Watch the directory, not the file: editors replace the file by
	// renaming a new one over it, which ends a watch on the file. Kubernetes
	// mounts a ConfigMap's file as a symlink through "..data", a symlink it
	// swaps to a new directory: no event names the file, so any event of
	// the directory that changes where the file leads reloads too.
	if err := w.Add(filepath.Dir(abs)); err != nil {
		return fmt.Errorf("config: watch %s: %w", path, err)
	}
	target, _ := filepath.EvalSymlinks(abs)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			now, _ := filepath.EvalSymlinks(abs)
			if (filepath.Clean(ev.Name) == abs && ev.Has(fsnotify.Write|fsnotify.Create|fsnotify.Rename)) || now != target {
				target = now
				timer.Reset(reloadDelay)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("config: watch error", slog.String("file", path), slog.Any("err", err))
		case <-timer.C:
			cfg, err := l.Load()
			if err != nil {
				log.Error("config: reload failed; keeping the running configuration", slog.String("file", path), slog.Any("err", err))
				continue
			}
			log.Debug("config: reloaded", slog.String("file", path))
			fn(cfg)
		}
	}
}
