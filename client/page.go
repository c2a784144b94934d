package client

import (
	"context"
	"iter"
)

// List is the answer of a list route that does not page.
type List[T any] struct {
	Items []T `json:"items"`
}

// Page is one page of a list route that pages. Next is the cursor of the
// following page (the after parameter of gateways, the cursor parameter of
// the others), "" at the end. A page may hold fewer items than asked, even
// none, while Next is not "": the server's read budget of one request ran
// out first, and Partial says so.
type Page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
	// Partial reports that the request's read budget ran out before the
	// page was full (a filter that matches rarely, or a credential that
	// has read much lately): Next goes on where it stopped.
	Partial bool `json:"partial,omitempty"`
}

// walk yields every item of the pages that page returns, starting at
// cursor and following Next to the end; an error ends the walk after it is
// yielded.
func walk[T any](ctx context.Context, cursor string, page func(ctx context.Context, cursor string) (*Page[T], error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		for {
			p, err := page(ctx, cursor)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range p.Items {
				if !yield(it, nil) {
					return
				}
			}
			if p.Next == "" || p.Next == cursor {
				return
			}
			cursor = p.Next
		}
	}
}
