package api

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/store"
)

// Stream feeds the WebSocket stream (store.Store).
type Stream interface {
	Tail(ctx context.Context, tenant string, start uint64, subjects []string, size func(context.Context) (int, error), maxWait time.Duration, fn func([]store.Message) error) error
	FindByKey(ctx context.Context, tenant, tuid string, tsmID int, tsmTs string, budget int) (seq uint64, ok bool, cost int, err error)
	Bounds(ctx context.Context, tenant string) (first, last uint64, err error)
}

// Faults of the stream.
var (
	ErrAfterUnknown    = fault.Define("api.after_unknown", fault.NotFound, "the message to resume after is not in the stream (it may have expired)")
	ErrUpgradeRequired = fault.Define("api.upgrade_required", fault.UpgradeRequired, "this route is a WebSocket: send an Upgrade: websocket request")
	ErrBadHandshake    = fault.Define("api.websocket_handshake", fault.InvalidArgument, "the WebSocket handshake is not valid (RFC 6455 section 4.1)")
	ErrOrigin          = fault.Define("api.websocket_origin", fault.PermissionDenied, "a browser page of another origin may not open this stream")
	ErrTooManyStreams  = fault.Define("api.too_many_streams", fault.ResourceExhausted, "too many streams are open for this credential or tenant; close one first")
)

// streamBatch is the most messages one frame of a stream holds.
const streamBatch = 100

// streamCount counts the open streams per credential and per tenant.
type streamCount struct {
	mu     sync.Mutex
	byCred map[string]int
	byTen  map[string]int
}

// acquire takes a stream slot for credential cred of tenant, or reports
// false when either is at its limit; release gives it back.
func (c *streamCount) acquire(tenant, cred string, perCred, perTenant int) (release func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byCred == nil {
		c.byCred, c.byTen = map[string]int{}, map[string]int{}
	}
	if c.byCred[cred] >= perCred || c.byTen[tenant] >= perTenant {
		return nil, false
	}
	c.byCred[cred]++
	c.byTen[tenant]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.byCred[cred]--; c.byCred[cred] <= 0 {
				delete(c.byCred, cred)
			}
			if c.byTen[tenant]--; c.byTen[tenant] <= 0 {
				delete(c.byTen, tenant)
			}
		})
	}, true
}

// checkHandshake refuses, as problem+json like every other error of the
// API, each handshake the WebSocket library would refuse with a text/plain
// answer of its own: websocket.Accept is only called once this passed.
func checkHandshake(w http.ResponseWriter, r *http.Request) error {
	if !r.ProtoAtLeast(1, 1) || !hasToken(r.Header, "Connection", "upgrade") || !hasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		return ErrUpgradeRequired.New()
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		return ErrBadHandshake.WithDetail("Sec-WebSocket-Version must be 13")
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return ErrBadHandshake.WithDetail("send exactly one Sec-WebSocket-Key header")
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		return ErrBadHandshake.WithDetail("Sec-WebSocket-Key must be 16 bytes in base64")
	}
	// Browsers send Origin; a page of another site must not use a visitor's
	// credentials here. Programs send none, or their own host.
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || !strings.EqualFold(u.Host, r.Host) {
			return ErrOrigin.New()
		}
	}
	return nil
}

// hasToken reports whether the comma-separated header key holds token,
// case-insensitively.
func hasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// thingseeKey is tsmTuid:tsmId:tsmTs, tsmTs in the exact text of a JSON
// number as the gateway sent it (1700000000, 1700000000.25, 1.7e9: the
// ingest keeps the text, and FindByKey compares it).
var thingseeKey = regexp.MustCompile(`^([A-Z]{4}[0-9]{2}[A-Z0-9]{11}):([0-9]{4,6}):([0-9]{1,20}(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?)$`)

// resumePoint is a parsed ?after=: empty means only new messages; a
// number is a stream sequence (the seq of the messages API);
// tsmTuid:tsmId:tsmTs is Thingsee's message key, which a receiver has from
// the last message it got.
type resumePoint struct {
	given bool
	seq   uint64
	bySeq bool
	tuid  string
	tsmID int
	tsmTs string
}

// parseAfter checks the syntax of ?after= (no lookup yet).
func parseAfter(after string) (resumePoint, error) {
	if after == "" {
		return resumePoint{}, nil
	}
	if n, err := strconv.ParseUint(after, 10, 64); err == nil {
		return resumePoint{given: true, bySeq: true, seq: n}, nil
	}
	m := thingseeKey.FindStringSubmatch(after)
	if m == nil {
		return resumePoint{}, ErrBadParameter.WithDetail("after must be a message seq or tsmTuid:tsmId:tsmTs")
	}
	id, _ := strconv.Atoi(m[2])
	return resumePoint{given: true, tuid: m[1], tsmID: id, tsmTs: m[3]}, nil
}

// resumeAfter turns a resume point into the first stream sequence to send
// (0: only new messages). A search by message key reads the sensor's
// newest messages of that tsmId: it spends the credential's read budget,
// found or not, so that resumes that miss cannot be repeated for free.
func (s *Server) resumeAfter(w http.ResponseWriter, r *http.Request, p *Principal, tenant string, at resumePoint) (uint64, error) {
	ctx := r.Context()
	switch {
	case !at.given:
		return 0, nil
	case at.bySeq:
		// Resuming after a message that has expired would leave a silent gap.
		first, last, err := s.deps.Stream.Bounds(ctx, tenant)
		if err != nil {
			return 0, err
		}
		if at.seq+1 < first || at.seq > last {
			return 0, ErrAfterUnknown.New()
		}
		return at.seq + 1, nil
	}
	loan, err := s.lendReads(w, r, p)
	if err != nil {
		return 0, err
	}
	seq, ok, cost, err := s.deps.Stream.FindByKey(ctx, tenant, at.tuid, at.tsmID, at.tsmTs, loan.lent)
	loan.settle(cost)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, ErrAfterUnknown.New()
	}
	return seq + 1, nil
}

// stream upgrades to a WebSocket and sends the tenant's messages as they
// are stored: each frame is a JSON array of Thingsee messages exactly as
// forwarded (a binary HPKE-sealed array when the websocket integration named
// by ?integration= has a key). ?after= resumes without a gap.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if s.deps.Stream == nil {
		return ErrNotFound.New()
	}
	tenant := r.PathValue("tenant")
	var filter forward.Filter
	var sealer forward.Sealer
	if id := r.URL.Query().Get("integration"); id != "" {
		if s.deps.Integrations == nil || !forward.ValidID(id) {
			return forward.ErrIntegrationNotFound.New()
		}
		v, err := s.deps.Integrations.Get(r.Context(), tenant, id)
		if err != nil {
			return err
		}
		if v.Type != forward.TypeWebsocket {
			return ErrBadParameter.WithDetail("integration %s is not a websocket integration", id)
		}
		if v.Paused {
			return ErrBadParameter.WithDetail("integration %s is paused", id)
		}
		filter = v.Filter
		if v.Encryption != nil && s.deps.ParseKey != nil {
			if sealer, _, err = s.deps.ParseKey([]byte(v.Encryption.PublicKeyPEM)); err != nil {
				return err
			}
		}
	}
	after, err := parseAfter(r.URL.Query().Get("after"))
	if err != nil {
		return err
	}
	subjects, inProcess := forward.StreamSubjects(tenant, filter)
	if err := checkHandshake(w, r); err != nil {
		return err
	}
	// The slot is taken before the resume point is looked up: a lookup,
	// found or not, holds one of the credential's streams meanwhile.
	release, ok := s.streams.acquire(tenant, p.Kind+":"+p.ID, s.cfg.MaxStreamsPerCredential, s.cfg.MaxStreamsPerTenant)
	if !ok {
		retryAfter(w, 10*time.Second)
		return ErrTooManyStreams.New()
	}
	defer release()
	start, err := s.resumeAfter(w, r, p, tenant, after)
	if err != nil {
		return err
	}
	// The server's read and write timeouts protect request/response routes;
	// a stream lives on (it has its own write timeout and pings).
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return nil // Accept has answered
	}
	defer c.CloseNow()
	// Opening the stream is a read of the tenant's messages; the messages
	// it sent are added when it ends (readaudit.go).
	s.reads.read(r, p, "stream", "stream", 1, 0)
	sent := 0
	defer func() { s.reads.read(r, p, "stream", "stream", 0, sent) }()
	ctx := c.CloseRead(r.Context())
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		// Keep idle connections alive through proxies, and end the stream
		// once its credential is revoked or expires (checked every StreamRecheck).
		t := time.NewTicker(s.cfg.StreamRecheck)
		defer t.Stop()
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, _, err := s.authenticate(r); err != nil {
					c.Close(websocket.StatusPolicyViolation, "credential no longer valid")
					stop()
					return
				}
				if time.Duration(i)*s.cfg.StreamRecheck%(30*time.Second) < s.cfg.StreamRecheck {
					pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					_ = c.Ping(pctx)
					cancel()
				}
			}
		}
	}()
	// Every message read is paid from the read budget, also one the filter
	// drops; a spent budget makes the stream wait, not fail.
	pace := s.pacer(r, p)
	size := func(ctx context.Context) (int, error) { return pace.next(ctx, streamBatch) }
	err = s.deps.Stream.Tail(ctx, tenant, start, subjects, size, 200*time.Millisecond, func(batch []store.Message) error {
		pace.spend(len(batch))
		var b forward.Batch
		for _, m := range batch {
			if inProcess && !filter.Matches(m.Gateway, m.Tuid, m.TsmID) {
				continue
			}
			b.Messages = append(b.Messages, forward.Message{Seq: m.Seq, Body: m.Message})
		}
		if len(b.Messages) == 0 {
			return nil
		}
		typ, payload := websocket.MessageText, b.JSON()
		if sealer != nil {
			sealed, err := sealer.Seal(payload)
			if err != nil {
				return err
			}
			typ, payload = websocket.MessageBinary, sealed
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := c.Write(wctx, typ, payload); err != nil {
			return err
		}
		sent += len(b.Messages)
		return nil
	})
	if err != nil && ctx.Err() == nil && !strings.Contains(err.Error(), "closed") {
		s.log.Warn("stream ended", "tenant_id", tenant, "request_id", requestID(r), "error", err)
		c.Close(websocket.StatusInternalError, "stream interrupted; resume with ?after=")
		return nil
	}
	c.Close(websocket.StatusNormalClosure, "")
	return nil
}
