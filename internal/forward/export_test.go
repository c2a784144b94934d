package forward

import (
	"time"

	"github.com/iotransit/iotransit/internal/backbone/names"
)

// SetStaleClaim sets how old a name claim must be before it can be taken
// over, until the returned func restores it.
func SetStaleClaim(d time.Duration) (restore func()) {
	old := staleClaim
	staleClaim = d
	return func() { staleClaim = old }
}

// IntegrationsBucket and NameKey expose where name claims live.
var (
	IntegrationsBucket = names.IntegrationsBucket
	StateBucket        = names.IntegrationStateBucket
	NameKey            = nameKey
)

// LaneOf exposes the lane a device's messages take.
var LaneOf = laneOf
