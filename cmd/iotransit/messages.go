package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/cli"
)

// The commands that read a tenant's data without curl: "iotransit messages"
// (the stored messages, and the live WebSocket stream with tail --follow;
// messages erase removes one sensor's data) and "iotransit rejected" (the
// messages the node refused, with why).

// tailDefault is how many messages tail shows before it follows.
const tailDefault = 10

// rejectedPoll is how often rejected tail --follow asks for new rejected
// messages: the API has no stream of them.
const rejectedPoll = 2 * time.Second

// messagesGroup is "iotransit messages".
var messagesGroup = &group{
	name:    "messages",
	summary: "read a tenant's stored messages, or follow them live; erase a sensor's",
	cmds: []command{
		{name: "list", synopsis: "[--gateway S] [--tuid T] [--tsm-id N] [--from T] [--to T] [--limit N] [--oldest] [--cursor C]",
			summary: "list stored messages, newest first", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				f := addMessageFilter(fs)
				lf := addListFlags(fs, "messages")
				return func(ctx context.Context, e *env, _ []string) error {
					q, err := f.query()
					if err != nil {
						return err
					}
					if err := lf.window(&q.From, &q.To); err != nil {
						return err
					}
					q.Limit, q.Oldest, q.Cursor = lf.limit, lf.oldest, lf.cursor
					p, err := e.api.ListMessages(ctx, e.tenant, q)
					if err != nil {
						return err
					}
					err = e.show(p, func(w io.Writer) error {
						t := newTable(w, messageHeader...)
						for _, m := range p.Items {
							t.row(messageLine(m).cells()...)
						}
						return t.flush()
					})
					if err != nil {
						return err
					}
					e.nextPage("messages", "--cursor", p.Next)
					return nil
				}
			}},
		{name: "tail", synopsis: "[--gateway S] [--tuid T] [--tsm-id N] [--limit N] [--follow]",
			summary: "show the last messages, oldest of them first; --follow then streams new ones until Ctrl-C", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				f := addMessageFilter(fs)
				limit := fs.Int("limit", tailDefault, "show the last N messages first (0: none)")
				follow := fs.Bool("follow", false, "then stream new messages as they are stored (WebSocket), until Ctrl-C")
				return func(ctx context.Context, e *env, _ []string) error {
					q, err := f.query()
					if err != nil {
						return err
					}
					if *limit < 0 {
						return usageError("--limit %d: want 0 or more", *limit)
					}
					return tailMessages(ctx, e, q, *limit, *follow)
				}
			}},
		{name: "erase", synopsis: "--tuid T",
			summary: "erase every stored record of one sensor: its messages, their re-driven copies, its dead letters and rejected messages (GDPR Art. 17; needs messages:erase)", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				tuid := fs.String("tuid", "", "the sensor (tsmTuid) whose data is erased (required)")
				return func(ctx context.Context, e *env, _ []string) error {
					t := strings.TrimSpace(*tuid)
					if t == "" {
						return usageError("iotransit messages erase: --tuid is required")
					}
					res, err := e.api.EraseDevice(ctx, e.tenant, t)
					if err != nil {
						if res != nil && res.Messages+res.Redriven+res.DeadLetters+res.Rejected > 0 {
							fmt.Fprintf(e.stderr, "erased before the error: %d messages, %d re-driven, %d dead letters, %d rejected; run the command again to finish\n",
								res.Messages, res.Redriven, res.DeadLetters, res.Rejected)
						}
						return err
					}
					return e.show(res, rows([]string{"TSM-TUID", "MESSAGES", "REDRIVEN", "DEAD-LETTERS", "REJECTED", "OVERWRITTEN"},
						[]client.DeviceErasure{*res}, func(r client.DeviceErasure) []string {
							return []string{r.Tuid, strconv.Itoa(r.Messages), strconv.Itoa(r.Redriven), strconv.Itoa(r.DeadLetters), strconv.Itoa(r.Rejected), strconv.Itoa(r.Overwritten)}
						}))
				}
			}},
	},
}

// rejectedGroup is "iotransit rejected".
var rejectedGroup = &group{
	name:    "rejected",
	summary: "read the messages a tenant's gateways sent that the node refused, with the reason",
	cmds: []command{
		{name: "list", synopsis: "[--gateway S] [--code C] [--from T] [--to T] [--limit N] [--oldest] [--cursor C]",
			summary: "list rejected messages, newest first", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				var q client.RejectedQuery
				addRejectedFilter(fs, &q)
				lf := addListFlags(fs, "rejected messages")
				return func(ctx context.Context, e *env, _ []string) error {
					if err := lf.window(&q.From, &q.To); err != nil {
						return err
					}
					q.Limit, q.Oldest, q.Cursor = lf.limit, lf.oldest, lf.cursor
					p, err := e.api.ListRejected(ctx, e.tenant, q)
					if err != nil {
						return err
					}
					err = e.show(p, rows(rejectedHeader, p.Items, rejectedCells))
					if err != nil {
						return err
					}
					e.nextPage("rejected messages", "--cursor", p.Next)
					return nil
				}
			}},
		{name: "tail", synopsis: "[--gateway S] [--code C] [--limit N] [--follow]",
			summary: "show the last rejected messages, oldest of them first; --follow then polls for new ones until Ctrl-C", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				var q client.RejectedQuery
				addRejectedFilter(fs, &q)
				limit := fs.Int("limit", tailDefault, "show the last N rejected messages first (0: none)")
				follow := fs.Bool("follow", false, "then show new rejected messages as they come (polled every "+shortDuration(rejectedPoll)+"), until Ctrl-C")
				return func(ctx context.Context, e *env, _ []string) error {
					if *limit < 0 {
						return usageError("--limit %d: want 0 or more", *limit)
					}
					return tailRejected(ctx, e, q, *limit, *follow)
				}
			}},
	},
}

// messageFilter holds the filter flags of the messages commands.
type messageFilter struct {
	gateway, tuid, tsmID string
}

// addMessageFilter defines --gateway, --tuid and --tsm-id.
func addMessageFilter(fs *flag.FlagSet) *messageFilter {
	f := &messageFilter{}
	fs.StringVar(&f.gateway, "gateway", "", "only the messages of this gateway (serial)")
	fs.StringVar(&f.tuid, "tuid", "", "only the messages of this sensor (tsmTuid)")
	fs.StringVar(&f.tsmID, "tsm-id", "", "only this message type (tsmId, 1000 to 999999)")
	return f
}

// query checks the filter and returns it as a query.
func (f *messageFilter) query() (client.MessageQuery, error) {
	q := client.MessageQuery{Gateway: strings.TrimSpace(f.gateway), TsmTuid: strings.TrimSpace(f.tuid)}
	if f.tsmID != "" {
		id, err := strconv.Atoi(f.tsmID)
		if err != nil || id < 1000 || id > 999999 {
			return q, usageError("--tsm-id %q: want a number from 1000 to 999999", f.tsmID)
		}
		q.TsmID = id
	}
	return q, nil
}

// addRejectedFilter defines the filter flags of the rejected commands.
func addRejectedFilter(fs *flag.FlagSet, q *client.RejectedQuery) {
	fs.StringVar(&q.Gateway, "gateway", "", "only the messages of this gateway (serial)")
	fs.StringVar(&q.Code, "code", "", "only this rejection code, e.g. thingsee.out_of_range")
}

// listFlags are the paging flags of a list command.
type listFlags struct {
	from, to string
	limit    int
	oldest   bool
	cursor   string
}

// addListFlags defines --from, --to, --limit, --oldest and --cursor.
func addListFlags(fs *flag.FlagSet, what string) *listFlags {
	l := &listFlags{}
	fs.StringVar(&l.from, "from", "", "only "+what+" stored at or after this time: RFC 3339, or a duration ago such as 24h")
	fs.StringVar(&l.to, "to", "", "only "+what+" stored before this time: RFC 3339, or a duration ago")
	fs.IntVar(&l.limit, "limit", 0, "at most this many "+what+" ("+pageLimits+")")
	fs.BoolVar(&l.oldest, "oldest", false, "oldest first (default: newest first)")
	fs.StringVar(&l.cursor, "cursor", "", "the next page, as printed after the previous one")
	return l
}

// window parses --from and --to into from and to.
func (l *listFlags) window(from, to *time.Time) error { return parseWindow(l.from, l.to, from, to) }

// parseWindow parses the values of --from and --to (parseWhen, both against
// one "now") into from and to, in UTC; a mistake is a usage error.
func parseWindow(fromFlag, toFlag string, from, to *time.Time) error {
	now := time.Now()
	for _, w := range []struct {
		name, value string
		t           *time.Time
	}{{"from", fromFlag, from}, {"to", toFlag, to}} {
		t, err := parseWhen(w.value, now)
		if err != nil {
			return usageError("--%s: %v", w.name, err)
		}
		*w.t = t.UTC()
	}
	return nil
}

// messageHeader is the header of the messages table.
var messageHeader = []string{"TIME", "GATEWAY", "TUID", "TSM-ID", "BODY"}

// msgLine is a message as tail prints it, one line each: a stored message
// and a message of the stream have these in common.
type msgLine struct {
	Time    time.Time       `json:"time"`
	Gateway string          `json:"gateway"`
	Tuid    string          `json:"tsmTuid,omitempty"`
	TsmID   int             `json:"tsmId,omitempty"`
	Message json.RawMessage `json:"message"`
}

// thingseeKeys are the members of a Thingsee message a line shows.
type thingseeKeys struct {
	Tuid    string   `json:"tsmTuid"`
	TsmID   int      `json:"tsmId"`
	Gw      string   `json:"tsmGw"`
	CloudTs *float64 `json:"tsmCloudTs"`
}

// messageLine is the line of a stored message.
func messageLine(m client.Message) msgLine {
	var k thingseeKeys
	_ = json.Unmarshal(m.Message, &k) // a stored message is a JSON object
	return msgLine{Time: m.ReceivedAt, Gateway: m.Gateway, Tuid: k.Tuid, TsmID: k.TsmID, Message: m.Message}
}

// streamLine is the line of a message of the stream, which carries its
// gateway (tsmGw) and reception time (tsmCloudTs) in itself.
func streamLine(raw json.RawMessage) (msgLine, error) {
	var k thingseeKeys
	if err := json.Unmarshal(raw, &k); err != nil {
		return msgLine{}, fmt.Errorf("stream: a message is not a JSON object: %w", err)
	}
	l := msgLine{Gateway: k.Gw, Tuid: k.Tuid, TsmID: k.TsmID, Message: raw}
	if k.CloudTs != nil {
		sec, frac := math.Modf(*k.CloudTs)
		l.Time = time.Unix(int64(sec), int64(frac*1e9))
	}
	return l, nil
}

// matches reports whether a line passes the filter of q (the stream has
// no filter of its own).
func (l msgLine) matches(q client.MessageQuery) bool {
	return (q.Gateway == "" || l.Gateway == q.Gateway) &&
		(q.TsmTuid == "" || l.Tuid == q.TsmTuid) &&
		(q.TsmID == 0 || l.TsmID == q.TsmID)
}

// cells are the line's cells in the messages table.
func (l msgLine) cells() []string {
	id := ""
	if l.TsmID != 0 {
		id = strconv.Itoa(l.TsmID)
	}
	return []string{fmtTime(&l.Time), l.Gateway, l.Tuid, id, string(l.Message)}
}

// printLine writes v as -o asks: compact JSON alone on a line, a YAML
// document after "---", or the cells separated by two spaces (a stream
// cannot align columns).
func (e *env) printLine(v any, cells []string) error {
	if e.output == cli.FormatYAML {
		if _, err := io.WriteString(e.stdout, "---\n"); err != nil {
			return err
		}
		return cli.PrintData(e.stdout, cli.FormatYAML, v)
	}
	if e.json {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = e.stdout.Write(append(b, '\n'))
		return err
	}
	t := newTable(e.stdout, cells...)
	return t.flush()
}

// tailMessages shows the last limit messages of q, oldest first, then,
// with follow, the messages the stream brings until ctx ends.
func tailMessages(ctx context.Context, e *env, q client.MessageQuery, limit int, follow bool) error {
	after := ""
	if limit > 0 || follow {
		q.Limit = max(limit, 1)
		p, err := e.api.ListMessages(ctx, e.tenant, q)
		if err != nil {
			return err
		}
		items := p.Items
		if len(items) > 0 {
			after = strconv.FormatUint(items[0].Seq, 10)
		}
		items = items[:min(limit, len(items))]
		for _, m := range slices.Backward(items) {
			l := messageLine(m)
			if err := e.printLine(l, l.cells()); err != nil {
				return err
			}
		}
	}
	if !follow {
		return nil
	}
	s, err := e.api.OpenStream(ctx, e.tenant, client.StreamOptions{After: after})
	if err != nil {
		return err
	}
	defer s.Close()
	for {
		raw, err := s.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C: the normal end of --follow
			}
			return err
		}
		l, err := streamLine(raw)
		if err != nil {
			return err
		}
		if !l.matches(q) {
			continue
		}
		if err := e.printLine(l, l.cells()); err != nil {
			return err
		}
	}
}

// rejectedHeader is the header of the rejected messages table.
var rejectedHeader = []string{"SEQ", "TIME", "GATEWAY", "CODE", "FIELD", "REASON", "BODY"}

// rejectedCells are a rejected message's cells in its table.
func rejectedCells(r client.Rejected) []string {
	body := r.Payload
	switch {
	case len(r.Message) > 0:
		body = string(r.Message)
	case r.PayloadBase64 != "":
		body = "base64:" + r.PayloadBase64
	}
	return []string{strconv.FormatUint(r.Seq, 10), fmtTime(&r.ReceivedAt), r.Gateway, r.Code, r.Field, r.Reason, body}
}

// tailRejected shows the last limit rejected messages of q, oldest first,
// then, with follow, polls for new ones until ctx ends.
func tailRejected(ctx context.Context, e *env, q client.RejectedQuery, limit int, follow bool) error {
	seen := newer[client.Rejected]{seq: func(r client.Rejected) uint64 { return r.Seq }}
	q.Limit = max(limit, 1)
	p, err := e.api.ListRejected(ctx, e.tenant, q)
	if err != nil {
		return err
	}
	for _, r := range slices.Backward(seen.mark(p.Items)[:min(limit, len(p.Items))]) {
		if err := e.printLine(r, rejectedCells(r)); err != nil {
			return err
		}
	}
	if !follow {
		return nil
	}
	q.Limit = 0 // the newest pages, back to the last one shown
	return poll(ctx, rejectedPoll, func(ctx context.Context) error {
		// Newest first: read pages back until one reaches a message shown
		// before, so that a burst of more than a page between two polls is
		// shown whole (at most rejectedPollPages pages; then say so).
		var items []client.Rejected
		pq := q
		for pages := 0; ; pages++ {
			p, err := e.api.ListRejected(ctx, e.tenant, pq)
			if err != nil {
				return err
			}
			items = append(items, p.Items...)
			if p.Next == "" || seen.last == 0 || len(p.Items) == 0 || seen.seq(p.Items[len(p.Items)-1]) <= seen.last {
				break
			}
			if pages+1 == rejectedPollPages {
				fmt.Fprintf(e.stderr, "iotransit: more than %d rejected messages since the last poll: the older of them are not shown here (they are stored: rejected list)\n", len(items))
				break
			}
			pq.Cursor = p.Next
		}
		for _, r := range seen.take(items) {
			if err := e.printLine(r, rejectedCells(r)); err != nil {
				return err
			}
		}
		return nil
	})
}

// rejectedPollPages bounds the pages one poll of rejected tail --follow
// reads back.
const rejectedPollPages = 20

// newer picks, from pages of a list read newest first again and again,
// the items that came after the newest one seen before: what is new.
type newer[T any] struct {
	seq  func(T) uint64 // an item's place in the list, growing
	last uint64
}

// mark remembers the newest of items (newest first), shown or not, and
// returns items.
func (n *newer[T]) mark(items []T) []T {
	if len(items) > 0 {
		n.last = max(n.last, n.seq(items[0]))
	}
	return items
}

// take returns the items (newest first) after the newest seen before,
// oldest first, and remembers the newest of them.
func (n *newer[T]) take(items []T) []T {
	var fresh []T
	for _, it := range slices.Backward(items) {
		if s := n.seq(it); s > n.last {
			fresh = append(fresh, it)
		}
	}
	if len(fresh) > 0 {
		n.last = n.seq(fresh[len(fresh)-1])
	}
	return fresh
}

// poll calls each every interval until ctx ends, the normal end of a
// --follow (Ctrl-C): then it returns nil. An error of each ends it.
func poll(ctx context.Context, every time.Duration, each func(ctx context.Context) error) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := each(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}
