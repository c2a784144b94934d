package fault_test

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/fault"
)

// Definitions local to this test binary; codes are namespaced "faulttest."
// so they never collide with the packages' own.
var (
	errA = fault.Define("faulttest.a", fault.InvalidArgument, "a went wrong")
	errB = fault.Define("faulttest.b", fault.NotFound, "no b")
)

// secret stands for internal text (a path, a query, a key) that must never
// reach a client.
const secret = "dial tcp 10.0.0.7:4222: secret-password=hunter2"

func TestFaultDefineSameDefinitionTwiceReturnsIt(t *testing.T) {
	d := fault.Define("faulttest.same", fault.Conflict, "same")
	if again := fault.Define("faulttest.same", fault.Conflict, "same"); again != d {
		t.Fatalf("identical redefinition returned a new definition %p, want %p", again, d)
	}
}

func TestFaultDefineDifferentlyPanics(t *testing.T) {
	fault.Define("faulttest.redefined", fault.InvalidArgument, "original")
	tests := []struct {
		name    string
		kind    fault.Kind
		message string
	}{
		{name: "other kind", kind: fault.Internal, message: "original"},
		{name: "other message", kind: fault.InvalidArgument, message: "changed"},
		{name: "both", kind: fault.NotFound, message: "changed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("redefining a code differently did not panic")
				}
				if !strings.Contains(fmt.Sprint(r), "faulttest.redefined") {
					t.Errorf("panic %q does not name the code", r)
				}
			}()
			fault.Define("faulttest.redefined", tc.kind, tc.message)
		})
	}
	// The original meaning survives the attempts.
	for _, d := range fault.Definitions() {
		if d.Code() == "faulttest.redefined" && (d.Kind() != fault.InvalidArgument || d.Message() != "original") {
			t.Fatalf("definition changed to %v %q", d.Kind(), d.Message())
		}
	}
}

func TestFaultDefinitionIs(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		wantA bool
		wantB bool
	}{
		{name: "nil", err: nil},
		{name: "plain error", err: io.EOF},
		{name: "new", err: errA.New(), wantA: true},
		{name: "with detail", err: errA.WithDetail("field %s", "x"), wantA: true},
		{name: "wrapping a plain cause", err: errA.Wrap(io.EOF), wantA: true},
		{name: "wrapped by fmt", err: fmt.Errorf("ctx: %w", errB.New()), wantB: true},
		{name: "twice wrapped by fmt", err: fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", errA.New())), wantA: true},
		{name: "joined", err: errors.Join(io.EOF, errB.New()), wantB: true},
		// The outer fault decides what a client sees (From), but the inner
		// one is still in the chain and Is must say so, as errors.Is does.
		{name: "fault wrapping a fault", err: errA.Wrap(errB.New()), wantA: true, wantB: true},
		{name: "fault wrapping a wrapped fault", err: errA.Wrap(fmt.Errorf("x: %w", errB.New())), wantA: true, wantB: true},
		{name: "text of a fault is not the fault", err: errors.New(errA.New().Error())},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := errA.Is(tc.err); got != tc.wantA {
				t.Errorf("errA.Is(%v) = %v, want %v", tc.err, got, tc.wantA)
			}
			if got := errB.Is(tc.err); got != tc.wantB {
				t.Errorf("errB.Is(%v) = %v, want %v", tc.err, got, tc.wantB)
			}
			// Definition.Is and the stdlib agree.
			if got := errors.Is(tc.err, errA.New()); got != tc.wantA {
				t.Errorf("errors.Is(%v, errA) = %v, want %v", tc.err, got, tc.wantA)
			}
			if got := errors.Is(tc.err, errB.New()); got != tc.wantB {
				t.Errorf("errors.Is(%v, errB) = %v, want %v", tc.err, got, tc.wantB)
			}
		})
	}
}

func TestFaultErrorIsToleratesNilTarget(t *testing.T) {
	var target *fault.Error
	if errors.Is(errA.New(), target) {
		t.Fatal("errors.Is(fault, (*fault.Error)(nil)) = true")
	}
}

func TestFaultErrorUnwrapKeepsCause(t *testing.T) {
	err := fmt.Errorf("store: %w", errA.Wrap(io.ErrUnexpectedEOF))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatal("the cause is not reachable through errors.Is")
	}
	if errors.Unwrap(errA.New()) != nil {
		t.Fatal("an error without a cause unwraps to something")
	}
}

func TestFaultAs(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantOK   bool
		wantCode string
	}{
		{name: "nil", err: nil},
		{name: "plain", err: io.EOF},
		{name: "direct", err: errB.New(), wantOK: true, wantCode: "faulttest.b"},
		{name: "wrapped", err: fmt.Errorf("x: %w", errB.Wrap(io.EOF)), wantOK: true, wantCode: "faulttest.b"},
		{name: "outermost wins", err: errA.Wrap(errB.New()), wantOK: true, wantCode: "faulttest.a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := fault.As(tc.err)
			if ok != tc.wantOK {
				t.Fatalf("As(%v) ok = %v, want %v", tc.err, ok, tc.wantOK)
			}
			if ok && e.Code() != tc.wantCode {
				t.Errorf("As(%v) code = %q, want %q", tc.err, e.Code(), tc.wantCode)
			}
		})
	}
}

func TestFaultFromMapsUnknownErrorsToInternal(t *testing.T) {
	cause := errors.New(secret)
	tests := []struct {
		name     string
		err      error
		wantCode string
		wantKind fault.Kind
	}{
		{name: "plain", err: cause, wantCode: "server.internal", wantKind: fault.Internal},
		{name: "plain wrapped", err: fmt.Errorf("open stream: %w", cause), wantCode: "server.internal", wantKind: fault.Internal},
		{name: "fault", err: errB.Wrap(cause), wantCode: "faulttest.b", wantKind: fault.NotFound},
		{name: "fault wrapped", err: fmt.Errorf("handler: %w", errA.WithDetail("field x")), wantCode: "faulttest.a", wantKind: fault.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := fault.From(tc.err)
			if f.Code() != tc.wantCode || f.Kind() != tc.wantKind {
				t.Fatalf("From(%v) = %s/%v, want %s/%v", tc.err, f.Code(), f.Kind(), tc.wantCode, tc.wantKind)
			}
			if strings.Contains(f.PublicMessage(), "secret") || strings.Contains(f.Detail(), "secret") {
				t.Errorf("public message %q leaks the cause", f.PublicMessage())
			}
			// The original error stays reachable for the log.
			if !errors.Is(f, cause) && tc.wantCode != "faulttest.a" {
				t.Errorf("From(%v) lost the cause", tc.err)
			}
		})
	}
	if f := fault.From(cause); !fault.ErrInternal.Is(f) || f.PublicMessage() != "internal error" {
		t.Fatalf("From(plain) = %v, public %q", f, f.PublicMessage())
	}
	if f := errA.New(); fault.From(fmt.Errorf("x: %w", f)) != f {
		t.Fatal("From did not return the fault in the chain itself")
	}
}

func TestFaultPublicMessageNeverContainsCause(t *testing.T) {
	cause := errors.New(secret)
	tests := []struct {
		name       string
		err        *fault.Error
		wantPublic string
	}{
		{name: "new", err: errA.New(), wantPublic: "a went wrong"},
		{name: "wrap", err: errA.Wrap(cause), wantPublic: "a went wrong"},
		{name: "wrap of wrapped", err: errA.Wrap(fmt.Errorf("db: %w", cause)), wantPublic: "a went wrong"},
		{name: "wrap of fault with cause", err: errA.Wrap(errB.Wrap(cause)), wantPublic: "a went wrong"},
		{name: "detail", err: errA.WithDetail("field %q", "x"), wantPublic: `a went wrong: field "x"`},
		{name: "wrap then detail", err: errA.Wrap(cause).WithDetail("try again"), wantPublic: "a went wrong: try again"},
		{name: "internal", err: fault.From(cause), wantPublic: "internal error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.PublicMessage(); got != tc.wantPublic {
				t.Errorf("PublicMessage() = %q, want %q", got, tc.wantPublic)
			}
			if strings.Contains(tc.err.PublicMessage(), "hunter2") || strings.Contains(tc.err.Detail(), "hunter2") {
				t.Errorf("public text leaks the cause: %q", tc.err.PublicMessage())
			}
		})
	}
	// The log text (Error) does carry the cause.
	if got := errA.Wrap(cause).Error(); !strings.Contains(got, secret) || !strings.HasPrefix(got, "faulttest.a: a went wrong") {
		t.Fatalf("Error() = %q, want the code, message and cause", got)
	}
}

func TestFaultErrorWithDetailCopies(t *testing.T) {
	orig := errA.Wrap(io.EOF)
	withDetail := orig.WithDetail("field %s", "y")
	if orig.Detail() != "" {
		t.Fatalf("WithDetail changed the original: detail %q", orig.Detail())
	}
	if withDetail.Detail() != "field y" || !errors.Is(withDetail, io.EOF) || !errA.Is(withDetail) {
		t.Fatalf("copy lost something: %v", withDetail)
	}
}

func TestFaultKindString(t *testing.T) {
	tests := []struct {
		name string
		kind fault.Kind
		want string
	}{
		{name: "invalid argument", kind: fault.InvalidArgument, want: "invalid_argument"},
		{name: "unauthenticated", kind: fault.Unauthenticated, want: "unauthenticated"},
		{name: "permission denied", kind: fault.PermissionDenied, want: "permission_denied"},
		{name: "not found", kind: fault.NotFound, want: "not_found"},
		{name: "conflict", kind: fault.Conflict, want: "conflict"},
		{name: "too large", kind: fault.TooLarge, want: "too_large"},
		{name: "unsupported media", kind: fault.UnsupportedMedia, want: "unsupported_media"},
		{name: "resource exhausted", kind: fault.ResourceExhausted, want: "resource_exhausted"},
		{name: "unavailable", kind: fault.Unavailable, want: "unavailable"},
		{name: "internal", kind: fault.Internal, want: "internal"},
		{name: "zero", kind: 0, want: "unknown"},
		{name: "out of range", kind: 99, want: "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.kind.String(); got != tc.want {
				t.Errorf("Kind(%d).String() = %q, want %q", int(tc.kind), got, tc.want)
			}
		})
	}
}

// TestFaultKindHTTPStatus pins the status of every kind: the API's answers
// and docs/errors.md both come from this one table.
func TestFaultKindHTTPStatus(t *testing.T) {
	tests := []struct {
		name string
		kind fault.Kind
		want int
	}{
		{name: "invalid argument", kind: fault.InvalidArgument, want: 400},
		{name: "unauthenticated", kind: fault.Unauthenticated, want: 401},
		{name: "permission denied", kind: fault.PermissionDenied, want: 403},
		{name: "not found", kind: fault.NotFound, want: 404},
		{name: "method not allowed", kind: fault.MethodNotAllowed, want: 405},
		{name: "conflict", kind: fault.Conflict, want: 409},
		{name: "too large", kind: fault.TooLarge, want: 413},
		{name: "unsupported media", kind: fault.UnsupportedMedia, want: 415},
		{name: "upgrade required", kind: fault.UpgradeRequired, want: 426},
		{name: "resource exhausted", kind: fault.ResourceExhausted, want: 429},
		{name: "internal", kind: fault.Internal, want: 500},
		{name: "unavailable", kind: fault.Unavailable, want: 503},
		{name: "zero", kind: 0, want: 500},
		{name: "out of range", kind: 99, want: 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.kind.HTTPStatus(); got != tc.want {
				t.Errorf("%v.HTTPStatus() = %d, want %d", tc.kind, got, tc.want)
			}
		})
	}
	// Every named kind has its own entry: a kind added without a status
	// would answer 500 unnoticed.
	for k := fault.Kind(1); k.String() != "unknown"; k++ {
		if k != fault.Internal && k.HTTPStatus() == 500 {
			t.Errorf("kind %v has no HTTP status of its own", k)
		}
	}
}

func TestFaultDefinitionsSortedAndComplete(t *testing.T) {
	defs := fault.Definitions()
	codes := make([]string, len(defs))
	for i, d := range defs {
		codes[i] = d.Code()
	}
	if !slices.IsSorted(codes) {
		t.Fatalf("Definitions() not sorted by code: %v", codes)
	}
	for _, want := range []string{"server.internal", "faulttest.a", "faulttest.b"} {
		if !slices.Contains(codes, want) {
			t.Errorf("Definitions() lacks %q: %v", want, codes)
		}
	}
}
