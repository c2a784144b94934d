// An integration's durable consumer and dead-letter stream, and the
// subjects a filter selects.

package forward

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
)

// filterSubjects returns the consumer's subject filters (the messages the
// filter selects and those re-driven to the integration) and whether the
// filter must also be applied in process (too many combinations). A
// filter that selects every message takes none: the whole stream, whose
// re-drives to the tenant's other integrations are dropped in process
// (redrives.foreign). JetStream reads a consumer without filters in
// stream order, but one with several intersects a message block's
// subjects with them for each message it hands out once a backlog
// forms, which then costs more than the rest of the delivery and keeps
// the backlog from draining.
func filterSubjects(tenant, id string, f Filter) ([]string, bool) {
	subjects, inProcess := StreamSubjects(tenant, f)
	if len(subjects) == 1 && subjects[0] == names.Messages(tenant) {
		return nil, inProcess
	}
	return append(subjects, names.RedrivenTo(tenant, id)), inProcess
}

// redrives tells the re-drives to an integration from those to the
// tenant's other integrations by their subject.
type redrives struct{ all, mine string }

func newRedrives(tenant, id string) redrives {
	return redrives{all: strings.TrimSuffix(names.Redriven(tenant), ">"), mine: strings.TrimSuffix(names.RedrivenTo(tenant, id), ">")}
}

// foreign reports whether a message of the stream is a re-drive to
// another integration (a consumer without filters reads them too).
func (r redrives) foreign(jm jetstream.Msg) bool {
	s := jm.Subject()
	return strings.HasPrefix(s, r.all) && !strings.HasPrefix(s, r.mine)
}

// StreamSubjects returns the subjects of a tenant's messages a filter
// selects, and whether it must also be applied in process (Matches).
func StreamSubjects(tenant string, f Filter) ([]string, bool) {
	any := func(v []string) []string {
		if len(v) == 0 {
			return []string{"*"}
		}
		return v
	}
	ids := []string{"*"}
	if len(f.TsmIDs) > 0 {
		ids = nil
		for _, t := range f.TsmIDs {
			ids = append(ids, strconv.Itoa(t))
		}
	}
	gws, devs := any(f.Gateways), any(f.Devices)
	if len(gws)*len(devs)*len(ids) > 256 {
		return []string{names.Messages(tenant)}, true
	}
	var out []string
	for _, g := range gws {
		for _, d := range devs {
			for _, t := range ids {
				out = append(out, names.MessageFilter(tenant, g, d, t))
			}
		}
	}
	if len(out) == 1 && out[0] == names.MessageFilter(tenant, "*", "*", "*") {
		out[0] = names.Messages(tenant)
	}
	return out, false
}

// ensureStreams makes the integration's durable consumer and dead-letter
// stream. A new integration receives messages stored from its creation on.
func (e *Engine) ensureStreams(ctx context.Context, r Integration, state State) (jetstream.Consumer, bool, error) {
	if _, err := e.streams.Stream(ctx, e.deadLetterStream(r.Tenant, r.ID)); err != nil {
		return nil, false, err
	}
	subjects, inProcess := filterSubjects(r.Tenant, r.ID, r.Filter)
	cfg := jetstream.ConsumerConfig{
		Durable:        names.IntegrationConsumer(r.ID),
		Description:    "delivery of integration " + r.ID,
		FilterSubjects: subjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        e.cfg.AckWait,
		MaxDeliver:     -1, // retries are the engine's: it dead-letters by age
		MaxAckPending:  pullSize(r, lanesOf(r)),
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &r.CreatedAt,
	}
	if len(subjects) == 1 {
		cfg.FilterSubject, cfg.FilterSubjects = subjects[0], nil
	}
	st, err := e.js.Stream(ctx, names.MessageStream(r.Tenant))
	if err != nil {
		return nil, false, fmt.Errorf("forward: message stream: %w", err)
	}
	cons, err := st.Consumer(ctx, names.IntegrationConsumer(r.ID))
	var dropFilters bool
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = st.CreateConsumer(ctx, cfg)
	} else if err == nil {
		// The start position is fixed at creation (by time, or by sequence
		// after a reset below); filters and limits follow updates. A
		// consumer updated from filters to none is no longer told of new
		// messages (nats-server 2.15): it is made anew below instead.
		info := cons.CachedInfo()
		cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = info.Config.DeliverPolicy, info.Config.OptStartTime, info.Config.OptStartSeq
		dropFilters = len(subjects) == 0 && (info.Config.FilterSubject != "" || len(info.Config.FilterSubjects) > 0)
		if !dropFilters {
			cons, err = st.UpdateConsumer(ctx, cfg)
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("forward: consumer: %w", err)
	}
	// Messages a previous session fetched and did not acknowledge (it died
	// or lost its lease mid-batch) would be redelivered only after AckWait,
	// and after newer ones: order would break. Batches are acknowledged in
	// order, so one sequence is the whole position: start again there, at
	// once and in order. The engine's own record (written through to the
	// stream before it acknowledges) wins over the consumer's ack floor,
	// which JetStream writes to disk lazily and a crash can roll back: that
	// would resend delivered batches, and the interrupted batch under a new
	// id.
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("forward: consumer info: %w", err)
	}
	start := info.AckFloor.Stream + 1
	if state.AckedThrough+1 > start {
		start = state.AckedThrough + 1
	}
	if p := state.Pending; p != nil && p.FirstSeq > state.AckedThrough {
		start = p.FirstSeq
	}
	// Pull requests a session with lanes left open (it pulls
	// continuously) would take the next messages to nobody: start over.
	if dropFilters || info.NumAckPending > 0 || info.NumWaiting > 0 || start != info.AckFloor.Stream+1 {
		if err := st.DeleteConsumer(ctx, names.IntegrationConsumer(r.ID)); err != nil {
			return nil, false, fmt.Errorf("forward: reset consumer: %w", err)
		}
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, nil
		cfg.OptStartSeq = start
		if cons, err = st.CreateConsumer(ctx, cfg); err != nil {
			return nil, false, fmt.Errorf("forward: reset consumer: %w", err)
		}
	}
	return cons, inProcess, nil
}
