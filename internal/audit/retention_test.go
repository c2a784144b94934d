package audit_test

import (
	"context"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/backbone/names"
)

// TestAuditApplyRetentionReachesTheIndex: a tenant's longer audit
// retention, applied after its index stream was made, is the retention of
// both its log and its index (an index kept shorter than its log loses
// the entries a filtered listing finds), and a shorter one never lowers
// either below the node's.
func TestAuditApplyRetentionReachesTheIndex(t *testing.T) {
	bb := startBackbone(t)
	const node = 24 * time.Hour
	l := openLog(t, bb, audit.Config{Retention: node}, newKey(t))
	own := map[string]time.Duration{}
	l.SetTenantRetention(func(tenant string) time.Duration { return own[tenant] })
	ctx := context.Background()
	for _, tenant := range []string{"acme", "beta"} {
		ensure(t, l, tenant)
		mixed(t, l, tenant, 1, 5)
		// A filtered listing makes the index stream.
		if _, err := l.ListPage(ctx, tenant, audit.Filter{Actor: "apikey:k1"}); err != nil {
			t.Fatal(err)
		}
	}
	own["acme"], own["beta"] = 30*24*time.Hour, time.Hour
	for _, tc := range []struct {
		name   string
		tenant string
		want   time.Duration
	}{
		{name: "longer than the node's", tenant: "acme", want: 30 * 24 * time.Hour},
		{name: "shorter than the node's", tenant: "beta", want: node},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := l.ApplyRetention(ctx, tc.tenant); err != nil {
				t.Fatal(err)
			}
			mixed(t, l, tc.tenant, 6, 1)
			if _, err := l.ListPage(ctx, tc.tenant, audit.Filter{Actor: "apikey:k1"}); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{names.AuditStream(tc.tenant), names.AuditIndexStream(tc.tenant)} {
				st, err := bb.JS.Stream(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				if got := st.CachedInfo().Config.MaxAge; got != tc.want {
					t.Errorf("%s: MaxAge %s, want %s", name, got, tc.want)
				}
			}
		})
	}
}
