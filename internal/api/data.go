package api

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/store"
	"github.com/iotransit/iotransit/internal/thingsee"
)

// Query parameter helpers: each failure names the parameter.

func intParam(r *http.Request, name string, min, max, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		return 0, ErrBadParameter.WithDetail("%s must be an integer from %d to %d", name, min, max)
	}
	return n, nil
}

func timeParam(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, ErrBadParameter.WithDetail("%s must be an RFC 3339 time such as 2026-01-02T15:04:05Z", name)
	}
	return t, nil
}

func orderParam(r *http.Request) (oldest bool, err error) {
	switch r.URL.Query().Get("order") {
	case "", "newest":
		return false, nil
	case "oldest":
		return true, nil
	}
	return false, ErrBadParameter.WithDetail("order must be newest or oldest")
}

func stringParam(r *http.Request, name string, max int) (string, error) {
	v := r.URL.Query().Get(name)
	if len(v) > max {
		return "", ErrBadParameter.WithDetail("%s is longer than %d characters", name, max)
	}
	return v, nil
}

// listWindow is the paging and time range every list of a stream shares.
type listWindow struct {
	limit    int
	from, to time.Time
	oldest   bool
}

// windowParams reads limit, from, to and order.
func windowParams(r *http.Request) (listWindow, error) {
	var w listWindow
	var err error
	if w.limit, err = intParam(r, "limit", 1, MaxLimit, DefaultLimit); err != nil {
		return w, err
	}
	if w.from, err = timeParam(r, "from"); err != nil {
		return w, err
	}
	if w.to, err = timeParam(r, "to"); err != nil {
		return w, err
	}
	w.oldest, err = orderParam(r)
	return w, err
}

func (s *Server) listMessages(w http.ResponseWriter, r *http.Request, p *Principal) error {
	win, err := windowParams(r)
	if err != nil {
		return err
	}
	q := store.Query{Limit: win.limit, From: win.from, To: win.to, Oldest: win.oldest}
	if q.TsmID, err = intParam(r, "tsmId", 1000, 999999, 0); err != nil {
		return err
	}
	if q.Tuid, err = stringParam(r, "tsmTuid", 32); err != nil {
		return err
	}
	if q.Gateway, err = stringParam(r, "gateway", 32); err != nil {
		return err
	}
	if q.Cursor, err = stringParam(r, "cursor", 512); err != nil {
		return err
	}
	loan, err := s.lendReads(w, r, p)
	if err != nil {
		return err
	}
	q.Budget = loan.lent
	pg, err := s.deps.Messages.QueryMessages(r.Context(), r.PathValue("tenant"), q)
	loan.settle(pg.Cost())
	if err != nil {
		return err
	}
	out := client.Page[client.Message]{Items: make([]client.Message, 0, len(pg.Items)), Next: pg.Next, Partial: pg.Partial}
	for _, m := range pg.Items {
		out.Items = append(out.Items, client.Message{ID: m.ID, Seq: m.Seq, ReceivedAt: m.ReceivedAt, StoredAt: m.StoredAt, Gateway: m.Gateway, Message: m.Message})
	}
	s.reads.read(r, p, "messages", "messages", 1, len(out.Items))
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) listRejected(w http.ResponseWriter, r *http.Request, p *Principal) error {
	win, err := windowParams(r)
	if err != nil {
		return err
	}
	q := store.RejectedQuery{Limit: win.limit, From: win.from, To: win.to, Oldest: win.oldest}
	if q.Gateway, err = stringParam(r, "gateway", 32); err != nil {
		return err
	}
	if q.Code, err = stringParam(r, "code", 64); err != nil {
		return err
	}
	if q.Cursor, err = stringParam(r, "cursor", 512); err != nil {
		return err
	}
	loan, err := s.lendReads(w, r, p)
	if err != nil {
		return err
	}
	q.Budget = loan.lent
	pg, err := s.deps.Messages.QueryRejected(r.Context(), r.PathValue("tenant"), q)
	loan.settle(pg.Cost())
	if err != nil {
		return err
	}
	out := client.Page[client.Rejected]{Items: make([]client.Rejected, 0, len(pg.Items)), Next: pg.Next, Partial: pg.Partial}
	for _, rec := range pg.Items {
		// The message itself when it is a JSON object fit to be handed on,
		// otherwise the raw payload as text or base64 (a message refused
		// for its structure is never nested: deep nesting or a lone
		// surrogate would reach the tenant's own tools).
		it := client.Rejected{
			Seq: rec.Seq, ReceivedAt: rec.ReceivedAt, StoredAt: rec.StoredAt, Gateway: rec.Gateway, Index: rec.Index,
			Code: rec.Code, Field: rec.Field, Reason: rec.Reason, TsmID: rec.TsmID, Tuid: rec.Tuid,
		}
		switch {
		case isJSONObject(rec.Raw) && !thingsee.Structural(rec.Code):
			it.Message = rec.Raw
		case utf8.Valid(rec.Raw):
			it.Payload = string(rec.Raw)
		default:
			it.PayloadBase64 = base64.StdEncoding.EncodeToString(rec.Raw)
		}
		out.Items = append(out.Items, it)
	}
	s.reads.read(r, p, "rejected", "rejected", 1, len(out.Items))
	writeJSON(w, http.StatusOK, out)
	return nil
}

func isJSONObject(b []byte) bool {
	t := strings.TrimSpace(string(b))
	return strings.HasPrefix(t, "{") && json.Valid(b)
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, p *Principal) error {
	win, err := windowParams(r)
	if err != nil {
		return err
	}
	oldest := win.oldest
	f := audit.Filter{Limit: win.limit, From: win.from, To: win.to, Newest: !oldest}
	for name, dst := range map[string]*string{"action": &f.Action, "actor": &f.Actor, "target": &f.Target, "outcome": &f.Outcome} {
		if *dst, err = stringParam(r, name, 128); err != nil {
			return err
		}
	}
	if c := r.URL.Query().Get("cursor"); c != "" {
		n, err := strconv.ParseUint(c, 10, 64)
		if err != nil || n == 0 {
			return ErrBadParameter.WithDetail("cursor must be a value from a previous page's next")
		}
		if oldest {
			f.After = n
		} else {
			f.Before = n
		}
	}
	loan, err := s.lendReads(w, r, p)
	if err != nil {
		return err
	}
	f.Budget = loan.lent
	pg, err := s.deps.Audit.ListPage(r.Context(), r.PathValue("tenant"), f)
	loan.settle(pg.Reads)
	if err != nil {
		return err
	}
	out := client.Page[audit.Entry]{Items: pg.Entries, Partial: pg.Partial}
	if out.Items == nil {
		out.Items = []audit.Entry{}
	}
	if pg.Next != 0 {
		out.Next = strconv.FormatUint(pg.Next, 10)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// verifyAudit verifies the tenant's log. It reads every stored entry and
// cannot stop part way: it is charged the log's size before it reads
// (Server.lendWhole), and refused with 429 until the credential and the
// tenant can pay it. The result is not cached: a verification is asked for
// to re-read what is stored now, and an answer kept from an earlier read
// would vouch for entries it no longer read.
func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var loan *readLoan
	rep, err := s.deps.Audit.VerifyWithin(r.Context(), r.PathValue("tenant"), func(reads int) error {
		var err error
		loan, err = s.lendWhole(w, r, p, reads)
		return err
	})
	if loan != nil {
		loan.settle(loan.lent)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
