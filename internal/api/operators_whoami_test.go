package api_test

import (
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestOperatorWhoAmINamesTheOperatorAndItsRole: GET /v1/whoami with a
// named operator's key answers its id, name and role (the bootstrap key
// stays "operator" with neither), never its secret.
func TestOperatorWhoAmINamesTheOperatorAndItsRole(t *testing.T) {
	n := nodetest.Start(t, nil)
	boot := nodetest.NewAPI(t, n)
	dana := createOperator(t, boot.Client, "dana", client.RoleReadonly)
	type answer struct {
		Kind, ID, Name, Role, Tenant string
		Scopes                       []string
	}
	tests := []struct {
		name, key string
		want      answer
	}{
		{"bootstrap key", boot.Key(), answer{Kind: "operator", ID: "operator"}},
		{"named operator", dana.Key, answer{Kind: "operator", ID: dana.ID, Name: "dana", Role: client.RoleReadonly}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := boot.Do("GET", "/v1/whoami", tc.key, nil)
			if r.Status != 200 {
				t.Fatalf("whoami: %d %s", r.Status, r.Body)
			}
			var got answer
			r.Decode(t, &got)
			if got.Kind != tc.want.Kind || got.ID != tc.want.ID || got.Name != tc.want.Name || got.Role != tc.want.Role || got.Tenant != "" || got.Scopes != nil {
				t.Errorf("whoami %s", r.Body)
			}
			if len(tc.key) > 20 && strings.Contains(string(r.Body), tc.key[len(tc.key)-20:]) {
				t.Errorf("whoami shows the secret: %s", r.Body)
			}
		})
	}
}
