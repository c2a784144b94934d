package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/iotransit/iotransit/client"
)

// gatewayGroup is "iotransit gateway".
var gatewayGroup = &group{
	name:    "gateway",
	summary: "register gateways and manage their lifecycle",
	cmds: []command{
		{name: "register", args: []string{"serial"}, synopsis: "[--label k=v ...]", summary: "register a gateway", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				labels := labelFlag{}
				fs.Var(labels, "label", "label key=value (repeatable)")
				return func(ctx context.Context, e *env, args []string) error {
					req := client.RegisterGatewayRequest{Serial: args[0]}
					if len(labels) > 0 {
						req.Labels = labels
					}
					g, err := e.api.RegisterGateway(ctx, e.tenant, req)
					if err != nil {
						return err
					}
					return e.show(g, gatewayTable(*g))
				}
			}},
		claimCmd,
		{name: "list", synopsis: "[--state active|isolated|revoked] [--limit N] [--after SERIAL]", summary: "list gateways, by serial", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				var q client.GatewayQuery
				fs.StringVar(&q.State, "state", "", "only gateways in this state: "+client.GatewayActive+", "+client.GatewayIsolated+" or "+client.GatewayRevoked)
				fs.IntVar(&q.Limit, "limit", 0, "at most this many ("+pageDefault+")")
				fs.StringVar(&q.After, "after", "", "start after this serial (the next page)")
				return func(ctx context.Context, e *env, _ []string) error {
					p, err := e.api.ListGateways(ctx, e.tenant, q)
					if err != nil {
						return err
					}
					if err := e.show(p, gatewayTable(p.Items...)); err != nil {
						return err
					}
					e.nextPage("gateways", "--after", p.Next)
					return nil
				}
			}},
		{name: "get", args: []string{"serial"}, summary: "show a gateway and its certificates", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				g, err := e.api.GetGateway(ctx, e.tenant, args[0])
				if err != nil {
					return err
				}
				return e.show(g, func(w io.Writer) error { return printGateway(w, g) })
			}},
		itemCmd("isolate", "serial", "refuse the gateway until it is activated again; drops its live session", (*client.Client).IsolateGateway, gatewayTable),
		itemCmd("activate", "serial", "let an isolated gateway connect again", (*client.Client).ActivateGateway, gatewayTable),
		itemCmd("revoke", "serial", "refuse the gateway for good and revoke all its certificates", (*client.Client).RevokeGateway, gatewayTable),
		gatewayLabelCmd,
		gatewayWatchCmd,
		gatewayRunCmd,
		{name: "delete", args: []string{"serial"}, summary: "delete a gateway's record and release its serial", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				if err := e.api.DeleteGateway(ctx, e.tenant, args[0]); err != nil {
					return err
				}
				e.done("gateway %s deleted", args[0])
				return nil
			}},
	},
}

// gatewayLabelCmd is "iotransit gateway label": its key=value arguments
// are as many as the user gives.
var gatewayLabelCmd = command{name: "label", args: []string{"serial"}, more: true, synopsis: "key=value... [--remove KEY]...",
	summary: "set and remove some of a gateway's labels; the others stay", tenant: true,
	flags: func(fs *flag.FlagSet) action {
		var remove []string
		fs.Var(listFlag{list: &remove, repeatable: true}, "remove", "remove the label KEY (repeatable, or KEY,KEY)")
		return func(ctx context.Context, e *env, args []string) error {
			set := labelFlag{}
			for _, kv := range args[1:] {
				if err := set.Set(kv); err != nil {
					return usageError("iotransit gateway label: %v", err)
				}
			}
			for _, k := range remove {
				if _, ok := set[k]; ok {
					return usageError("iotransit gateway label: label %q is both set and removed", k)
				}
			}
			if len(set) == 0 && len(remove) == 0 {
				return usageError("iotransit gateway label: nothing to do: give key=value to set or --remove KEY")
			}
			return labelGateway(ctx, e, args[0], set, remove)
		}
	}}

// labelGateway sets the labels of set and removes those of remove (a
// label the gateway does not have is no error), keeping the others, in one
// change on the server (setLabels, removeLabels): a change made by someone
// else at the same time is kept too.
func labelGateway(ctx context.Context, e *env, serial string, set map[string]string, remove []string) error {
	g, err := e.api.UpdateGateway(ctx, e.tenant, serial, client.UpdateGatewayRequest{SetLabels: set, RemoveLabels: remove})
	if err != nil {
		return err
	}
	return e.show(g, gatewayTable(*g))
}

// gatewayTable writes gateways, one a row.
func gatewayTable(gs ...client.Gateway) func(w io.Writer) error {
	return rows([]string{"SERIAL", "STATE", "CONNECTED", "CERT-EXPIRY", "LABELS"}, gs, func(g client.Gateway) []string {
		return []string{g.Serial, g.State, yesNo(g.Connected), fmtTime(g.CertificateExpiry), fmtLabels(g.Labels)}
	})
}

// printGateway writes a gateway and its certificates.
func printGateway(w io.Writer, g *client.Gateway) error {
	t := newTable(w, "SERIAL:", g.Serial)
	t.row("TENANT:", g.Tenant)
	t.row("STATE:", g.State)
	t.row("CONNECTED:", yesNo(g.Connected))
	t.row("CREATED:", fmtTime(&g.CreatedAt))
	t.row("UPDATED:", fmtTime(&g.UpdatedAt))
	t.row("LABELS:", fmtLabels(g.Labels))
	t.row("CERT-EXPIRY:", fmtTime(g.CertificateExpiry))
	gatewayStatusRows(t, g)
	if err := t.flush(); err != nil {
		return err
	}
	if len(g.Certificates) == 0 {
		fmt.Fprintln(w, "\nno certificates issued")
		return nil
	}
	fmt.Fprintln(w)
	return rows([]string{"CERT-SERIAL", "STATUS", "NOT-BEFORE", "NOT-AFTER", "REVOKED", "FINGERPRINT"}, g.Certificates, func(c client.Certificate) []string {
		return []string{c.Serial, c.Status, fmtTime(&c.NotBefore), fmtTime(&c.NotAfter), fmtTime(c.RevokedAt), c.Fingerprint}
	})(w)
}

// fmtLabels writes labels as k=v,k=v, by key.
func fmtLabels(l map[string]string) string {
	parts := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

// watchPoll is how often gateway watch asks for what is new: the API has
// no stream of rejected messages or audit entries.
const watchPoll = rejectedPoll

// gatewayWatchCmd is "iotransit gateway watch".
var gatewayWatchCmd = command{name: "watch", args: []string{"serial"}, synopsis: "[--since D] [--limit N] [--messages=false] [--once]",
	summary: "follow a gateway's connections, rejected messages (its down/errors reports) and messages through the API, without taking over its MQTT session; until Ctrl-C", tenant: true,
	flags: func(fs *flag.FlagSet) action {
		var o watchOptions
		fs.StringVar(&o.since, "since", "1h", "show what happened since then first: a duration ago such as 10m, or an RFC 3339 time")
		fs.IntVar(&o.limit, "limit", 20, "show at most the last N events of that time first (0: none)")
		fs.BoolVar(&o.messages, "messages", true, "show the gateway's stored messages too, one line each")
		fs.BoolVar(&o.once, "once", false, "print the recent events and exit, rather than follow")
		return func(ctx context.Context, e *env, args []string) error {
			if o.limit < 0 {
				return usageError("--limit %d: want 0 or more", o.limit)
			}
			since, err := parseWhen(o.since, time.Now())
			if err != nil {
				return usageError("--since: %v", err)
			}
			o.from = since.UTC()
			return watchGateway(ctx, e, args[0], o)
		}
	}}

// watchOptions are the flags of gateway watch.
type watchOptions struct {
	since    string
	from     time.Time
	limit    int
	messages bool
	once     bool
}

// watchEvent is one line of gateway watch: when, what kind, and a short
// detail; -o json prints it with the API's item it comes from.
type watchEvent struct {
	Time     time.Time          `json:"time"`
	Kind     string             `json:"kind"`
	Detail   string             `json:"detail"`
	Gateway  *client.Gateway    `json:"gateway,omitempty"`
	Rejected *client.Rejected   `json:"rejected,omitempty"`
	Message  *client.Message    `json:"message,omitempty"`
	Audit    *client.AuditEntry `json:"audit,omitempty"`
	seq      uint64             // the item's place in its list
}

// cells are the event's line: time, kind (padded, so that details align
// when kinds are no longer than the longest, "disconnected") and detail.
func (ev watchEvent) cells() []string {
	return []string{fmtTime(&ev.Time), fmt.Sprintf("%-12s", ev.Kind), ev.Detail}
}

// watchSource is one list of the API that gateway watch follows, read
// newest first as events.
type watchSource struct {
	// read returns a page, newest first, and whether older items follow.
	read func(ctx context.Context, limit int) (evs []watchEvent, more bool, err error)
	seen newer[watchEvent]
	// optional, when set, names what the source shows: a credential
	// without the scope to read it gets a note saying so, not an error.
	optional string
}

// watchSources are the lists gateway watch reads: the gateway's rejected
// messages (every report on its down/errors names rejected messages the
// tenant stores: one report per upload, its entries all stored, the first
// 50 of them named), its audit entries (connections and what was done to
// it) and, with o.messages, its stored messages.
func watchSources(e *env, serial string, o watchOptions) []*watchSource {
	bySeq := newer[watchEvent]{seq: func(ev watchEvent) uint64 { return ev.seq }}
	srcs := []*watchSource{
		{seen: bySeq, read: func(ctx context.Context, limit int) ([]watchEvent, bool, error) {
			p, err := e.api.ListRejected(ctx, e.tenant, client.RejectedQuery{Gateway: serial, From: o.from, Limit: limit})
			if err != nil {
				return nil, false, err
			}
			return eventsOf(p.Items, rejectedEvent), p.Next != "", nil
		}},
		{seen: bySeq, optional: "connections and audit entries", read: func(ctx context.Context, limit int) ([]watchEvent, bool, error) {
			p, err := e.api.ListAudit(ctx, e.tenant, client.AuditQuery{Target: "gateway:" + serial, From: o.from, Limit: limit})
			if err != nil {
				return nil, false, err
			}
			return eventsOf(p.Items, auditEvent), p.Next != "", nil
		}},
	}
	if o.messages {
		srcs = append(srcs, &watchSource{seen: bySeq, read: func(ctx context.Context, limit int) ([]watchEvent, bool, error) {
			p, err := e.api.ListMessages(ctx, e.tenant, client.MessageQuery{Gateway: serial, From: o.from, Limit: limit})
			if err != nil {
				return nil, false, err
			}
			return eventsOf(p.Items, messageEvent), p.Next != "", nil
		}})
	}
	return srcs
}

// eventsOf turns items into events, in their order.
func eventsOf[T any](items []T, event func(T) watchEvent) []watchEvent {
	evs := make([]watchEvent, len(items))
	for i := range items {
		evs[i] = event(items[i])
	}
	return evs
}

// rejectedEvent is a rejected message as the gateway's down/errors report
// names it: code, field, reason, and the message's tsmId and tsmTuid.
func rejectedEvent(r client.Rejected) watchEvent {
	d := "[" + r.Code + "] "
	if r.Field != "" {
		d += r.Field + ": "
	}
	d += r.Reason
	if r.Tuid != "" || r.TsmID != 0 {
		d += fmt.Sprintf(" (tsmTuid %s, tsmId %d)", orDash(r.Tuid), r.TsmID)
	}
	return watchEvent{Time: r.ReceivedAt, Kind: "rejected", Detail: d, Rejected: &r, seq: r.Seq}
}

// messageEvent is a stored message, briefly: its sensor and type.
func messageEvent(m client.Message) watchEvent {
	l := messageLine(m)
	return watchEvent{Time: m.ReceivedAt, Kind: "message", Detail: fmt.Sprintf("tsmTuid %s, tsmId %d", orDash(l.Tuid), l.TsmID), Message: &m, seq: m.Seq}
}

// auditEvent is an audit entry about the gateway: a connection (its
// address, or why it ended or was refused), else what was done by whom.
func auditEvent(a client.AuditEntry) watchEvent {
	ev := watchEvent{Time: a.Time, Audit: &a, seq: a.Seq}
	switch a.Action {
	case "ingest.connection.connect":
		ev.Kind, ev.Detail = "connected", "from "+orDash(a.Source)
	case "ingest.connection.disconnect":
		ev.Kind, ev.Detail = "disconnected", orDash(a.Detail["reason"])
	case "ingest.connection.refused":
		ev.Kind, ev.Detail = "refused", a.Outcome+" (from "+orDash(a.Source)+")"
	default:
		ev.Kind, ev.Detail = "audit", a.Action+" by "+a.Actor
		if a.Outcome != "ok" {
			ev.Detail += ": " + a.Outcome
		}
	}
	if n := a.Detail["count"]; n != "" {
		ev.Detail += fmt.Sprintf(" (%s times, %s to %s)", n, a.Detail["first"], a.Detail["last"])
	}
	return ev
}

// stateEvent is the gateway as it is when the watch starts.
func stateEvent(g *client.Gateway, now time.Time) watchEvent {
	d := g.State
	if g.Connected {
		d += ", connected"
	} else {
		d += ", not connected"
	}
	if g.LastSeen != nil {
		d += ", last seen " + fmtTime(g.LastSeen)
	}
	return watchEvent{Time: now, Kind: "gateway", Detail: d, Gateway: g}
}

// watchGateway prints the gateway's state and its last events since
// o.from, oldest first, then, unless o.once, polls for new events until
// ctx ends. It reads the API only: the gateway's MQTT session is its own.
func watchGateway(ctx context.Context, e *env, serial string, o watchOptions) error {
	g, err := e.api.GetGateway(ctx, e.tenant, serial)
	if err != nil {
		return err
	}
	show := func(evs []watchEvent) error {
		slices.SortStableFunc(evs, func(a, b watchEvent) int { return a.Time.Compare(b.Time) })
		for _, ev := range evs {
			if err := e.printLine(ev, ev.cells()); err != nil {
				return err
			}
		}
		return nil
	}
	if err := show([]watchEvent{stateEvent(g, time.Now())}); err != nil {
		return err
	}
	srcs := watchSources(e, serial, o)
	var recent []watchEvent
	for _, s := range srcs {
		evs, _, err := s.read(ctx, max(o.limit, 1))
		var pe *client.Problem
		if s.optional != "" && errors.As(err, &pe) && pe.Status == http.StatusForbidden {
			fmt.Fprintf(e.stderr, "gateway watch: %s not shown: %v\n", s.optional, err)
			s.read = nil
			continue
		}
		if err != nil {
			return err
		}
		recent = append(recent, s.seen.mark(evs)...)
	}
	slices.SortStableFunc(recent, func(a, b watchEvent) int { return a.Time.Compare(b.Time) })
	if err := show(recent[max(0, len(recent)-o.limit):]); err != nil || o.once {
		return err
	}
	return poll(ctx, watchPoll, func(ctx context.Context) error {
		var fresh []watchEvent
		for _, s := range srcs {
			if s.read == nil {
				continue
			}
			evs, more, err := s.read(ctx, 0)
			if err != nil {
				return err
			}
			seen := s.seen.last
			news := s.seen.take(evs)
			if more && seen > 0 && len(news) == len(evs) {
				// A whole page is new: what came before it since the last
				// poll is not shown. Say so rather than skip it silently.
				fresh = append(fresh, watchEvent{Time: news[0].Time, Kind: "skipped", Detail: fmt.Sprintf("more %s events than a page since the last poll: the older of them are not shown here (they are stored)", news[0].Kind)})
			}
			fresh = append(fresh, news...)
		}
		return show(fresh)
	})
}
