package store

import "testing"

// TestNamesTuidFindsTheSensorInAnyRejectedShape: a rejected record is the
// sensor's when its raw bytes are its message, a payload holding one at
// any depth, or any other value (not a message) naming its TUID; a message
// of another sensor that mentions it is not.
func TestNamesTuidFindsTheSensorInAnyRejectedShape(t *testing.T) {
	const a, b = "TSEN01ERASE000001", "TSEN01ERASE000002"
	for _, tc := range []struct {
		name string
		raw  string
		want bool
	}{
		{name: "its message", raw: `{"tsmTuid":"` + a + `"}`, want: true},
		{name: "another's message naming it", raw: `{"tsmTuid":"` + b + `","note":"` + a + `"}`, want: false},
		{name: "a payload holding its message", raw: `[{"tsmTuid":"` + b + `"},{"tsmTuid":"` + a + `"}]`, want: true},
		{name: "a payload of another's messages naming it", raw: `[{"tsmTuid":"` + b + `","note":"` + a + `"}]`, want: false},
		{name: "not JSON naming it", raw: `tsmTuid=` + a, want: true},
		{name: "not JSON naming nobody", raw: `{{{`, want: false},
		{name: "a JSON string naming it", raw: `"tsmTuid=` + a + `"`, want: true},
		{name: "a nested payload holding its message", raw: `[[{"tsmTuid":"` + a + `"}]]`, want: true},
		{name: "a payload element that is a string naming it", raw: `[{"tsmTuid":"` + b + `"},"` + a + `"]`, want: true},
		{name: "a JSON number", raw: `12345`, want: false},
		{name: "an object of another shape holding its message", raw: `{"messages":[{"tsmTuid":"` + a + `"}]}`, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := namesTuid([]byte(tc.raw), a); got != tc.want {
				t.Errorf("namesTuid(%s) = %v, want %v", tc.raw, got, tc.want)
			}
		})
	}
}
