package bench

import (
	"context"
	"log/slog"
	"sort"
	"strconv"
	"sync"
)

// LogCounts are the warnings and errors a server logged during a run.
type LogCounts struct {
	Warnings int `json:"warnings"`
	Errors   int `json:"errors"`
	// Messages counts the records by level and message ("ERROR publish not
	// persisted"), most frequent first when listed by Top.
	Messages map[string]int `json:"messages,omitempty"`
}

// Top returns up to n "count× message" lines, most frequent first.
func (c LogCounts) Top(n int) []string {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range c.Messages {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].v != all[j].v {
			return all[i].v > all[j].v
		}
		return all[i].k < all[j].k
	})
	var out []string
	for i := 0; i < len(all) && i < n; i++ {
		out = append(out, strconv.Itoa(all[i].v)+"× "+all[i].k)
	}
	return out
}

// LogCounter is a slog.Handler that passes every record to the handler it
// wraps and counts those at warning level and above: the server's log
// noise during a run.
type LogCounter struct {
	next   slog.Handler
	shared *logCounterState
}

type logCounterState struct {
	mu sync.Mutex
	c  LogCounts
}

// NewLogCounter wraps next.
func NewLogCounter(next slog.Handler) *LogCounter {
	return &LogCounter{next: next, shared: &logCounterState{c: LogCounts{Messages: map[string]int{}}}}
}

// Enabled reports whether next handles level, and always counts warnings.
func (l *LogCounter) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn || l.next.Enabled(ctx, level)
}

// Handle counts r and passes it on.
func (l *LogCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		l.shared.mu.Lock()
		if r.Level >= slog.LevelError {
			l.shared.c.Errors++
		} else {
			l.shared.c.Warnings++
		}
		l.shared.c.Messages[r.Level.String()+" "+r.Message]++
		l.shared.mu.Unlock()
	}
	if !l.next.Enabled(ctx, r.Level) {
		return nil
	}
	return l.next.Handle(ctx, r)
}

// WithAttrs returns a counter sharing these counts.
func (l *LogCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return &LogCounter{next: l.next.WithAttrs(as), shared: l.shared}
}

// WithGroup returns a counter sharing these counts.
func (l *LogCounter) WithGroup(name string) slog.Handler {
	return &LogCounter{next: l.next.WithGroup(name), shared: l.shared}
}

// Counts returns a copy of the counts so far.
func (l *LogCounter) Counts() LogCounts {
	l.shared.mu.Lock()
	defer l.shared.mu.Unlock()
	c := l.shared.c
	c.Messages = make(map[string]int, len(l.shared.c.Messages))
	for k, v := range l.shared.c.Messages {
		c.Messages[k] = v
	}
	return c
}

// Since returns the warnings and errors counted in c that were not yet in
// before, an earlier Counts of the same counter.
func (c LogCounts) Since(before LogCounts) LogCounts {
	d := LogCounts{Warnings: c.Warnings - before.Warnings, Errors: c.Errors - before.Errors, Messages: map[string]int{}}
	for k, v := range c.Messages {
		if v -= before.Messages[k]; v > 0 {
			d.Messages[k] = v
		}
	}
	return d
}
