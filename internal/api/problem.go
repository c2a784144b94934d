package api

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/fault"
)

// Faults of the API itself.
var (
	ErrUnauthenticated = fault.Define("api.unauthenticated", fault.Unauthenticated, "a valid bearer credential is required")
	ErrNotFound        = fault.Define("api.not_found", fault.NotFound, "no such resource")
	ErrBadParameter    = fault.Define("api.bad_parameter", fault.InvalidArgument, "a query parameter is not valid")
	ErrMethod          = fault.Define("api.method_not_allowed", fault.MethodNotAllowed, "the method is not allowed on this resource")
	ErrUnavailable     = fault.Define("api.unavailable", fault.Unavailable, "the service is not ready")
)

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeError answers with problem+json (RFC 9457 §3). Only the fault's
// public message reaches the client; the cause goes to the log once.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	f := fault.From(err)
	status := f.Kind().HTTPStatus()
	rid := requestID(r)
	if status >= 500 {
		log.Error("request failed", "request_id", rid, "error_code", f.Code(), "error", err, "path", r.URL.Path)
	} else {
		log.Info("request refused", "request_id", rid, "error_code", f.Code(), "path", r.URL.Path)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="iotransit"`)
	}
	p := client.Problem{
		Type:      "https://iotransit.dev/problems/" + f.Code(),
		Title:     f.Definition().Message(),
		Status:    status,
		Detail:    f.Detail(),
		Code:      f.Code(),
		RequestID: rid,
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeList answers 200 with a list of what view makes of each of xs (an
// empty list, never null).
func writeList[T, V any](w http.ResponseWriter, xs []T, view func(T) V) {
	items := make([]V, 0, len(xs))
	for _, x := range xs {
		items = append(items, view(x))
	}
	writeJSON(w, http.StatusOK, client.List[V]{Items: items})
}
