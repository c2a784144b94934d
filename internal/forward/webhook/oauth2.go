package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// maxEarlyRefresh is how long before its expiry a token is replaced, at
// most (a quarter of its lifetime for short-lived tokens).
const maxEarlyRefresh = 10 * time.Second

// tokenCache holds the OAuth2 client credentials token of one target.
//
// It does what oauth2.ReuseTokenSource does (fetch once, reuse until
// expiry), plus what it cannot: each fetch runs under the caller's context
// (the delivery's deadline), a token the endpoint refused is dropped, and a
// token living less than ReuseTokenSource's fixed 10s early expiry is still
// reused.
type tokenCache struct {
	conf   clientcredentials.Config
	client *http.Client // egress-guarded, no redirects
	lock   chan struct{}

	tok       *oauth2.Token
	refreshAt time.Time // zero: no expiry
}

func newTokenCache(a Auth, client *http.Client) *tokenCache {
	return &tokenCache{
		conf: clientcredentials.Config{
			ClientID:     a.ClientID,
			ClientSecret: a.ClientSecret,
			TokenURL:     a.TokenURL,
			Scopes:       a.Scopes,
			// RFC 6749 §2.3.1: servers must support Basic; auto-detection
			// would send the secret twice on a failure.
			AuthStyle: oauth2.AuthStyleInHeader,
		},
		client: client,
		lock:   make(chan struct{}, 1),
	}
}

// token returns the cached token, or fetches one when there is none, it is
// about to expire, or it is refused (the token the endpoint answered 401
// to; a token another delivery already replaced is not fetched again).
func (c *tokenCache) token(ctx context.Context, refused *oauth2.Token) (*oauth2.Token, error) {
	select {
	case c.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, tokenError(ctx.Err())
	}
	defer func() { <-c.lock }()
	now := time.Now() // the token's expiry is on the real clock
	if c.tok != nil && c.tok != refused && (c.refreshAt.IsZero() || now.Before(c.refreshAt)) {
		return c.tok, nil
	}
	c.tok = nil
	tok, err := c.conf.Token(context.WithValue(ctx, oauth2.HTTPClient, c.client))
	if err != nil {
		return nil, tokenError(err)
	}
	c.tok, c.refreshAt = tok, time.Time{}
	if !tok.Expiry.IsZero() {
		c.refreshAt = tok.Expiry.Add(-min(maxEarlyRefresh, tok.Expiry.Sub(now)/4))
	}
	return tok, nil
}

// tokenError describes a failed token request without the response body
// (oauth2.RetrieveError's text holds it) or the token URL's query.
func tokenError(err error) error {
	var re *oauth2.RetrieveError
	var ue *url.Error
	switch {
	case errors.As(err, &re):
		s := "the token endpoint answered"
		if re.Response != nil {
			s += fmt.Sprintf(" HTTP %d", re.Response.StatusCode)
		}
		if re.ErrorCode != "" {
			s += " " + safeToken(re.ErrorCode)
		}
		return errors.New(s)
	case errors.As(err, &ue):
		return fmt.Errorf("%s: %w", networkSummary(ue.Err), ue.Err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return err
	default:
		return errors.New("the token response is not usable")
	}
}

// safeToken keeps an OAuth2 error code (RFC 6749 §5.2: printable ASCII) to
// a short run of letters, digits and _ for logs.
func safeToken(s string) string {
	b := make([]byte, 0, min(len(s), 40))
	for i := 0; i < len(s) && len(b) < cap(b); i++ {
		if c := s[i]; c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b = append(b, c)
		}
	}
	return string(b)
}
