package credential

import (
	"strings"
	"testing"
)

func TestCredentialTokenRoundTrip(t *testing.T) {
	token, id, secret, err := NewToken("iet_")
	if err != nil {
		t.Fatal(err)
	}
	if want := "iet_" + id + "_" + secret; token != want {
		t.Fatalf("token %q, want %q", token, want)
	}
	gotID, gotSecret, ok := ParseToken("iet_", token)
	if !ok || gotID != id || gotSecret != secret {
		t.Fatalf("ParseToken(%q) = %q, %q, %v; want %q, %q, true", token, gotID, gotSecret, ok, id, secret)
	}
	_, _, again, err := NewToken("iet_")
	if err != nil {
		t.Fatal(err)
	}
	if again == secret {
		t.Fatal("two tokens share a secret")
	}
}

func TestCredentialTokenParseRefusesOtherForms(t *testing.T) {
	token, id, secret, err := NewToken("itk_")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token string
	}{
		{"other prefix", "iet_" + id + "_" + secret},
		{"no prefix", id + "_" + secret},
		{"no separator", "itk_" + id + secret},
		{"short id", "itk_" + id[1:] + "_" + secret},
		{"id not hex", "itk_" + strings.Repeat("g", 16) + "_" + secret},
		{"short secret", token[:len(token)-1]},
		{"long secret", token + "A"},
		{"empty", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if id, secret, ok := ParseToken("itk_", tc.token); ok {
				t.Fatalf("ParseToken(%q) = %q, %q, true", tc.token, id, secret)
			}
		})
	}
}

func TestCredentialSecretMatchesOnlyItsDomain(t *testing.T) {
	hash := HashSecret("iotransit/enrollment/v1", "s3cret")
	for _, tc := range []struct {
		name, domain, secret string
		want                 bool
	}{
		{"same domain and secret", "iotransit/enrollment/v1", "s3cret", true},
		{"other domain", secretDomain, "s3cret", false},
		{"other secret", "iotransit/enrollment/v1", "s3creT", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SecretMatches(tc.domain, tc.secret, hash); got != tc.want {
				t.Fatalf("SecretMatches(%q, %q) = %v, want %v", tc.domain, tc.secret, got, tc.want)
			}
		})
	}
}
