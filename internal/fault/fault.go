// Package fault is the one error type of iotransit: it decides what a client
// may see of a failure. A Definition carries a stable code, a kind and a
// public message; the cause and any private detail stay in logs.
//
// Each edge maps a fault once: the API to RFC 9457 problem+json (status from
// the kind), the MQTT ingest to reason codes, the CLI to "code: message".
package fault

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Kind classifies a failure the way clients need to react to it.
type Kind int

// Kinds, in the spirit of gRPC status codes.
const (
	InvalidArgument Kind = iota + 1
	Unauthenticated
	PermissionDenied
	NotFound
	Conflict
	TooLarge
	UnsupportedMedia
	MethodNotAllowed
	UpgradeRequired
	ResourceExhausted
	Unavailable
	Internal
)

var kindNames = map[Kind]string{
	InvalidArgument:   "invalid_argument",
	Unauthenticated:   "unauthenticated",
	PermissionDenied:  "permission_denied",
	NotFound:          "not_found",
	Conflict:          "conflict",
	TooLarge:          "too_large",
	UnsupportedMedia:  "unsupported_media",
	MethodNotAllowed:  "method_not_allowed",
	UpgradeRequired:   "upgrade_required",
	ResourceExhausted: "resource_exhausted",
	Unavailable:       "unavailable",
	Internal:          "internal",
}

// httpStatus is the HTTP status of each kind: the API answers a fault with
// it (RFC 9457 problem+json), and docs/errors.md lists it.
var httpStatus = map[Kind]int{
	InvalidArgument:   400,
	Unauthenticated:   401,
	PermissionDenied:  403,
	NotFound:          404,
	Conflict:          409,
	TooLarge:          413,
	UnsupportedMedia:  415,
	MethodNotAllowed:  405,
	UpgradeRequired:   426,
	ResourceExhausted: 429,
	Unavailable:       503,
	Internal:          500,
}

// HTTPStatus returns the HTTP status a client gets for a fault of this
// kind: the one table of it. An unknown kind is 500, like Internal.
func (k Kind) HTTPStatus() int {
	if s, ok := httpStatus[k]; ok {
		return s
	}
	return 500
}

// String returns the snake_case name of the kind.
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "unknown"
}

// Definition is a registered failure: a stable code, a kind and the public
// message a client sees.
type Definition struct {
	code    string
	kind    Kind
	message string
}

var (
	mu          sync.Mutex
	definitions = map[string]*Definition{}
)

// Define registers a failure. Codes are snake_case and namespaced by
// component ("ingest.topic_denied"). Redefining a code differently panics,
// so a code can never silently change meaning.
func Define(code string, kind Kind, message string) *Definition {
	mu.Lock()
	defer mu.Unlock()
	if d, ok := definitions[code]; ok {
		if d.kind != kind || d.message != message {
			panic(fmt.Sprintf("fault: code %q redefined differently", code))
		}
		return d
	}
	d := &Definition{code: code, kind: kind, message: message}
	definitions[code] = d
	return d
}

// Definitions returns every registered definition, sorted by code.
func Definitions() []*Definition {
	mu.Lock()
	defer mu.Unlock()
	out := make([]*Definition, 0, len(definitions))
	for _, d := range definitions {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].code < out[j].code })
	return out
}

// Code returns the stable code.
func (d *Definition) Code() string { return d.code }

// Kind returns the kind.
func (d *Definition) Kind() Kind { return d.kind }

// Message returns the public message.
func (d *Definition) Message() string { return d.message }

// New returns an error of this definition without a cause.
func (d *Definition) New() *Error { return &Error{def: d} }

// Wrap returns an error of this definition caused by cause. The cause is
// never shown to clients.
func (d *Definition) Wrap(cause error) *Error { return &Error{def: d, cause: cause} }

// WithDetail returns an error of this definition with a public detail: a
// sentence written for the client (never an internal error text).
func (d *Definition) WithDetail(format string, args ...any) *Error {
	return &Error{def: d, detail: fmt.Sprintf(format, args...)}
}

// Error is an instance of a Definition.
type Error struct {
	def    *Definition
	cause  error
	detail string
}

// Error returns the code, the public message, the detail and the cause, for logs.
func (e *Error) Error() string {
	s := e.def.code + ": " + e.def.message
	if e.detail != "" {
		s += ": " + e.detail
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.cause }

// Is reports whether target is the same definition (or an Error of it).
func (e *Error) Is(target error) bool {
	// A nil *Error target has no definition: it matches nothing (it used to
	// dereference nil and panic inside errors.Is).
	if t, ok := target.(*Error); ok && t != nil {
		return t.def == e.def
	}
	return false
}

// Definition returns the definition of the error.
func (e *Error) Definition() *Definition { return e.def }

// Code returns the stable code.
func (e *Error) Code() string { return e.def.code }

// Kind returns the kind.
func (e *Error) Kind() Kind { return e.def.kind }

// PublicMessage returns what a client may read: the message and the detail.
func (e *Error) PublicMessage() string {
	if e.detail != "" {
		return e.def.message + ": " + e.detail
	}
	return e.def.message
}

// Detail returns the public detail, "" if none.
func (e *Error) Detail() string { return e.detail }

// WithDetail returns a copy of e with a public detail.
func (e *Error) WithDetail(format string, args ...any) *Error {
	c := *e
	c.detail = fmt.Sprintf(format, args...)
	return &c
}

// Is reports whether err is (or wraps) an Error of definition d.
func (d *Definition) Is(err error) bool {
	// Walk the whole chain as errors.Is does: errors.As stops at the first
	// *Error, so a fault wrapping another fault (ErrA.Wrap(ErrB.New()))
	// used to report false for the inner definition.
	return errors.Is(err, &Error{def: d})
}

// As finds the first *Error in err's chain.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// ErrInternal is the definition used for anything that is not a fault: the
// client learns only that something failed and the request id.
var ErrInternal = Define("server.internal", Internal, "internal error")

// From returns err as an *Error, mapping anything unknown to ErrInternal
// (keeping it as the cause, for logs).
//
// Several client faults joined (errors.Join, a validation reporting every
// problem at once) become the first one with every public message in its
// detail, so the client learns all of them in one answer.
func From(err error) *Error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var first *Error
		var msgs []string
		for _, e := range j.Unwrap() {
			f, ok := As(e)
			if !ok || f.Kind() == Internal {
				first = nil
				break
			}
			if first == nil {
				first = f
			}
			msgs = append(msgs, f.PublicMessage())
		}
		if first != nil && len(msgs) > 1 {
			c := *first
			c.detail = strings.Join(msgs, "; ")
			c.cause = err
			return &c
		}
	}
	if e, ok := As(err); ok {
		return e
	}
	return ErrInternal.Wrap(err)
}
