package gwproto_test

import (
	"testing"

	"github.com/iotransit/iotransit/internal/gwproto"
)

func TestGwprotoFirmwareVersions(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b string
		want int
	}{
		{"equal", "1.2.0", "1.2", 0},
		{"newer patch", "1.2.1", "1.2", 1},
		{"older minor", "1.9", "1.10", -1},
		{"major wins", "2", "1.99.99", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gwproto.CompareVersions(tc.a, tc.b); got != tc.want {
				t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name  string
		v     string
		valid bool
	}{
		{"plain", "1.2.3", true},
		{"one number", "7", true},
		{"leading zero", "1.02", false},
		{"prefix", "v1", false},
		{"suffix", "1.2-rc1", false},
		{"empty part", "1..2", false},
		{"five parts", "1.2.3.4.5", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gwproto.ValidVersion(tc.v); got != tc.valid {
				t.Errorf("ValidVersion(%q) = %v", tc.v, got)
			}
		})
	}
	if !gwproto.ValidModel("TSGW06") || gwproto.ValidModel("TS-GW") || gwproto.ValidModel("") {
		t.Error("ValidModel accepts only letters, digits and underscores")
	}
}
