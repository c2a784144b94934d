package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/mosquitto"
)

// RequireMosquitto returns the path of the mosquitto broker, skipping the
// test if it is not installed, unless IOTRANSIT_REQUIRE_PEERS=1, which
// fails it.
func RequireMosquitto(t testing.TB) string {
	t.Helper()
	p, err := mosquitto.LookPath("mosquitto")
	if err != nil {
		missingPeer(t, "mosquitto", err)
	}
	return p
}

// Mosquitto starts a mosquitto broker (see RequireMosquitto when it is not
// installed) and stops it, removing its files, at cleanup.
func Mosquitto(t testing.TB, cfg mosquitto.Config) *mosquitto.Broker {
	t.Helper()
	RequireMosquitto(t)
	if len(cfg.Users) > 0 {
		if _, err := mosquitto.LookPath("mosquitto_passwd"); err != nil {
			missingPeer(t, "mosquitto_passwd", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second*Slowdown())
	defer cancel()
	b, err := mosquitto.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
