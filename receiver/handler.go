package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxBody is the largest delivery body a Handler reads when
// MaxBody is zero: the node's largest batch (1000 messages of up to
// 16 KiB each, with the members the cloud adds, sealed or not) fits.
const DefaultMaxBody = 32 << 20

// Delivery is one webhook request, verified and decoded.
type Delivery struct {
	// ID is the batch id (webhook-id), the same on every retry of the
	// batch.
	ID string
	// Timestamp is when the request was signed (webhook-timestamp).
	Timestamp time.Time
	// Sealed says whether the body came sealed (and was opened).
	Sealed bool
	// Body is the JSON array of messages, opened if it was sealed.
	Body []byte
	// Messages are the body's messages, in the order they were stored.
	Messages []Message
}

// Handler answers webhook deliveries: it reads the body, verifies its
// signature, opens it when it is sealed, decodes the batch and calls
// Deliver. It answers 204 when Deliver returns nil; 500 when Deliver
// fails, so that the node delivers the batch again later; 401 when the
// signature does not verify; 400 for a body that does not open or decode;
// 413 for a body larger than MaxBody; 405 for a method other than POST.
type Handler struct {
	// Verifier checks the signatures (required).
	Verifier *Verifier
	// Opener opens sealed bodies; nil refuses them. When set, a body that
	// is not sealed is refused too: the integration has a key.
	Opener *Opener
	// MaxBody bounds the body read, in bytes (DefaultMaxBody when zero).
	MaxBody int64
	// Deliver takes a delivery (required). Messages can come again (at
	// least once): de-duplicate on Message.Key.
	Deliver func(ctx context.Context, d *Delivery) error
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "deliveries are POST requests", http.StatusMethodNotAllowed)
		return
	}
	d, status, err := h.read(w, r)
	if err != nil {
		http.Error(w, err.Error(), status)
		return
	}
	if err := h.Deliver(r.Context(), d); err != nil {
		http.Error(w, "the delivery was not taken; send it again later", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// read reads, verifies, opens and decodes a delivery, or says which status
// refuses it and why.
func (h *Handler) read(w http.ResponseWriter, r *http.Request) (*Delivery, int, error) {
	limit := h.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	// Refuse what cannot verify before reading a body.
	for _, name := range []string{HeaderID, HeaderTimestamp, HeaderSignature} {
		if r.Header.Get(name) == "" {
			return nil, http.StatusUnauthorized, fmt.Errorf("%w: %s is absent", ErrMissingHeader, name)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("the body is larger than %d bytes", limit)
		}
		return nil, http.StatusBadRequest, errors.New("the body could not be read")
	}
	if err := h.Verifier.Verify(body, r.Header); err != nil {
		return nil, http.StatusUnauthorized, err
	}
	ts, _ := strconv.ParseInt(r.Header.Get(HeaderTimestamp), 10, 64) // verified
	d := &Delivery{ID: r.Header.Get(HeaderID), Timestamp: time.Unix(ts, 0), Body: body}
	sealed := strings.EqualFold(r.Header.Get(HeaderEncryption), "hpke")
	switch {
	case sealed && h.Opener == nil:
		return nil, http.StatusBadRequest, errors.New("the body is sealed and this receiver has no key to open it")
	case !sealed && h.Opener != nil:
		return nil, http.StatusBadRequest, errors.New("the body is not sealed, and this receiver takes only sealed bodies")
	case sealed:
		if d.Body, err = h.Opener.Open(body); err != nil {
			return nil, http.StatusBadRequest, err
		}
		d.Sealed = true
	}
	if d.Messages, err = DecodeBatch(d.Body); err != nil {
		return nil, http.StatusBadRequest, err
	}
	return d, 0, nil
}
