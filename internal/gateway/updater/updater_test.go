package updater_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/firmware"
	"github.com/iotransit/iotransit/internal/firmware/firmwaretest"
	"github.com/iotransit/iotransit/internal/gateway/updater"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

const model = "TSGW06"

// env is a node with acme's firmware repository, as a publisher set it up.
type env struct {
	t    *testing.T
	n    *node.Node
	repo *firmwaretest.Repo
	seq  int
}

func newEnv(t *testing.T) *env {
	n := nodetest.Start(t, nodetest.NoLimits)
	return &env{t: t, n: n, repo: firmwaretest.Init(t, n, "acme")}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second*testutil.Slowdown())
	t.Cleanup(cancel)
	return c
}

// image returns an image of version v.
func image(v string) []byte {
	return bytes.Repeat([]byte("firmware "+model+" "+v+"\n"), 64)
}

// publish publishes image(v) for m.
func (e *env) publish(m, v string) []byte {
	e.t.Helper()
	img := image(v)
	if err := e.repo.Publish(img, m, v); err != nil {
		e.t.Fatalf("publish %s %s: %v", m, v, err)
	}
	return img
}

// gateway is one enrolled gateway with its updater.
type gateway struct {
	serial string
	up     *updater.Updater
	dir    string
}

// gateway enrolls a new gateway of acme and makes its updater; mod may
// change the updater's configuration.
func (e *env) gateway(mod func(*updater.Config)) *gateway {
	e.t.Helper()
	e.seq++
	serial := fmt.Sprintf("TSGW06UPD%08d", e.seq)
	cert := nodetest.Gateway(e.t, e.n, "acme", serial)
	c, err := client.New(client.Config{Server: "https://" + e.n.APIAddr(), CAPEM: e.n.ServerCAPEM(), Certificate: cert})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	dir := e.t.TempDir()
	cfg := updater.Config{Dir: dir, Client: c, Model: model, TrustedRoot: e.repo.Root, Logger: testutil.Logger(e.t)}
	if mod != nil {
		mod(&cfg)
	}
	up, err := updater.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return &gateway{serial: serial, up: up, dir: dir}
}

// rollout starts a rollout of m v to g and returns its notice.
func (e *env) rollout(g *gateway, m, v string) gwproto.FirmwareNotice {
	e.t.Helper()
	ro, err := e.repo.Client.CreateRollout(context.Background(), "acme", client.CreateRolloutRequest{Target: m, Version: v, Serials: []string{g.serial}})
	if err != nil {
		e.t.Fatalf("rollout %s %s: %v", m, v, err)
	}
	return gwproto.FirmwareNotice{RolloutID: ro.ID, Target: m, Version: v}
}

// cloudState returns g's state in a rollout as the cloud shows it.
func (e *env) cloudState(id, serial string) client.RolloutGateway {
	e.t.Helper()
	ro, err := e.repo.Client.GetRollout(context.Background(), "acme", id)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, g := range ro.Gateways {
		if g.Serial == serial {
			return g
		}
	}
	e.t.Fatalf("rollout %s has no %s", id, serial)
	return client.RolloutGateway{}
}

// install applies m v to g and boots it, which must succeed.
func (e *env) install(g *gateway, m, v string) updater.Slot {
	e.t.Helper()
	n := e.rollout(g, m, v)
	if r := g.up.Apply(ctx(e.t), n); r.State != client.FirmwareInstalling {
		e.t.Fatalf("apply %s %s: %+v", m, v, r)
	}
	s, err := g.up.Boot(ctx(e.t))
	if err != nil || s.Version != v {
		e.t.Fatalf("boot after %s: %+v %v", v, s, err)
	}
	if st := e.cloudState(n.RolloutID, g.serial); st.State != client.FirmwareInstalled {
		e.t.Fatalf("the cloud shows %+v", st)
	}
	return s
}

func (e *env) kv() jetstream.KeyValue {
	e.t.Helper()
	kv, err := e.n.JetStream().KeyValue(context.Background(), names.FirmwareBucket("acme"))
	if err != nil {
		e.t.Fatal(err)
	}
	return kv
}

// replaceStored overwrites a stored metadata file (an attacker with the
// storage, or a mirror) until the test ends.
func (e *env) replaceStored(key string, b []byte) {
	e.t.Helper()
	kv := e.kv()
	old, err := kv.Get(context.Background(), key)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), key, b); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _, _ = kv.Put(context.Background(), key, old.Value()) })
}

func (e *env) stored(key string) []byte {
	e.t.Helper()
	en, err := e.kv().Get(context.Background(), key)
	if err != nil {
		e.t.Fatal(err)
	}
	return en.Value()
}

// replaceImage overwrites the stored image of img with b.
func (e *env) replaceImage(img, b []byte) {
	e.t.Helper()
	obs, err := e.n.JetStream().ObjectStore(context.Background(), names.FirmwareImages("acme"))
	if err != nil {
		e.t.Fatal(err)
	}
	sum := sha256.Sum256(img)
	if _, err := obs.PutBytes(context.Background(), hex.EncodeToString(sum[:]), b); err != nil {
		e.t.Fatal(err)
	}
}

// TestUpdaterRefusesEachAttack applies a rollout under each attack: the
// gateway refuses it with its reason, reports it (the cloud shows the
// failure), and keeps running what it ran.
func TestUpdaterRefusesEachAttack(t *testing.T) {
	e := newEnv(t)
	e.publish(model, "1.0.0")
	for _, tc := range []struct {
		name string
		// attack publishes what the case needs, starts the rollout and
		// tampers with what the gateway will fetch; it returns the notice.
		attack func(t *testing.T, g *gateway) gwproto.FirmwareNotice
		mod    func(*updater.Config)
		reason string
	}{
		{"tampered image", func(t *testing.T, g *gateway) gwproto.FirmwareNotice {
			img := e.publish(model, "2.1.0")
			bad := bytes.Clone(img)
			bad[10] ^= 0xff
			e.replaceImage(img, bad)
			return e.rollout(g, model, "2.1.0")
		}, nil, updater.ReasonHashMismatch},
		{"truncated download", func(t *testing.T, g *gateway) gwproto.FirmwareNotice {
			img := e.publish(model, "2.2.0")
			e.replaceImage(img, img[:len(img)/2])
			return e.rollout(g, model, "2.2.0")
		}, nil, updater.ReasonTruncated},
		{"longer image", func(t *testing.T, g *gateway) gwproto.FirmwareNotice {
			img := e.publish(model, "2.3.0")
			e.replaceImage(img, append(bytes.Clone(img), "and more"...))
			return e.rollout(g, model, "2.3.0")
		}, nil, updater.ReasonTooLarge},
		{"wrong model", func(t *testing.T, g *gateway) gwproto.FirmwareNotice {
			e.publish("TSGW07", "3.0.0")
			return e.rollout(g, "TSGW07", "3.0.0")
		}, nil, updater.ReasonWrongModel},
		{"older version", func(t *testing.T, g *gateway) gwproto.FirmwareNotice {
			e.publish(model, "1.5.0")
			e.install(g, model, "1.5.0")
			return e.rollout(g, model, "1.0.0")
		}, nil, updater.ReasonNotNewer},
		{"same version again", func(t *testing.T, g *gateway) gwproto.FirmwareNotice {
			e.publish(model, "1.6.0")
			e.install(g, model, "1.6.0")
			return e.rollout(g, model, "1.6.0")
		}, nil, updater.ReasonNotNewer},
		{"timestamp of a wrong signer", func(t *testing.T, g *gateway) gwproto.FirmwareNotice {
			n := e.rollout(g, model, "1.0.0")
			ts, err := metadata.Timestamp().FromBytes(e.stored("timestamp.json"))
			if err != nil {
				t.Fatal(err)
			}
			ts.Signed.Version += 100
			ts.ClearSignatures()
			s, _ := signature.LoadED25519Signer(firmwaretest.Key(t))
			if _, err := ts.Sign(s); err != nil {
				t.Fatal(err)
			}
			b, _ := ts.ToBytes(false)
			e.replaceStored("timestamp.json", b)
			return n
		}, nil, updater.ReasonSignature},
		{"replayed old metadata", func(t *testing.T, g *gateway) gwproto.FirmwareNotice {
			old := e.stored("timestamp.json")
			e.publish(model, "2.4.0")
			// The gateway learns the newer timestamp...
			e.install(g, model, "2.4.0")
			// ...then is served the old one (a mirror replaying it).
			e.publish(model, "2.5.0")
			n := e.rollout(g, model, "2.5.0")
			e.replaceStored("timestamp.json", old)
			return n
		}, nil, updater.ReasonRollback},
		{"expired timestamp (freeze)", func(t *testing.T, g *gateway) gwproto.FirmwareNotice {
			return e.rollout(g, model, "1.0.0")
		}, func(c *updater.Config) {
			// The repository's timestamp lives 24h: to a gateway whose clock
			// is two days on, what the server serves is a frozen repository.
			c.Now = func() time.Time { return time.Now().Add(48 * time.Hour) }
		}, updater.ReasonExpired},
		{"targets metadata altered in storage", func(t *testing.T, g *gateway) gwproto.FirmwareNotice {
			e.publish(model, "2.6.0")
			n := e.rollout(g, model, "2.6.0")
			repo, err := e.repo.Client.GetFirmwareRepository(context.Background(), "acme")
			if err != nil {
				t.Fatal(err)
			}
			key := fmt.Sprintf("%d.targets.json", repo.Roles.Targets.Version)
			// The same length, one character changed: the snapshot's hash of
			// it no longer matches.
			e.replaceStored(key, bytes.Replace(e.stored(key), []byte("TSGW06-2.6.0"), []byte("TSGW06-2.6.9"), 1))
			return n
		}, nil, updater.ReasonMetadataMismatch},
		{"forged notice of an unsigned target", func(t *testing.T, g *gateway) gwproto.FirmwareNotice {
			n := e.rollout(g, model, "1.0.0")
			n.Version = "9.9.9"
			return n
		}, nil, updater.ReasonNoTarget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			g := e.gateway(tc.mod)
			n := tc.attack(t, g)
			before, err := g.up.Boot(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			r := g.up.Apply(ctx(t), n)
			if r.State != client.FirmwareFailed || r.Reason != tc.reason {
				t.Fatalf("apply: %+v, want failed %s", r, tc.reason)
			}
			if st := e.cloudState(n.RolloutID, g.serial); st.State != client.FirmwareFailed || st.Reason != tc.reason {
				t.Fatalf("the cloud shows %+v", st)
			}
			after, err := g.up.Boot(ctx(t))
			if err != nil || after != before {
				t.Fatalf("after a refusal the gateway runs %+v (%v), before %+v", after, err, before)
			}
		})
	}
}

func TestUpdaterInstallsAndConfirmsAGoodImage(t *testing.T) {
	e := newEnv(t)
	img := e.publish(model, "1.0.0")
	g := e.gateway(nil)
	factory, err := g.up.Boot(ctx(t))
	if err != nil || factory.Name != "a" || factory.Target != "" {
		t.Fatalf("factory boot: %+v %v", factory, err)
	}
	n := e.rollout(g, model, "1.0.0")
	r := g.up.Apply(ctx(t), n)
	if r.State != client.FirmwareInstalling {
		t.Fatalf("apply: %+v", r)
	}
	if st := e.cloudState(n.RolloutID, g.serial); st.State != client.FirmwareInstalling {
		t.Fatalf("the cloud shows %+v before the restart", st)
	}
	s, err := g.up.Boot(ctx(t))
	if err != nil || s.Name != "b" || s.Version != "1.0.0" || s.Target != "TSGW06-1.0.0" {
		t.Fatalf("boot: %+v %v", s, err)
	}
	if b, err := os.ReadFile(s.Path); err != nil || !bytes.Equal(b, img) {
		t.Fatalf("slot b does not hold the image: %v", err)
	}
	if st := e.cloudState(n.RolloutID, g.serial); st.State != client.FirmwareInstalled {
		t.Fatalf("the cloud shows %+v", st)
	}
	// The retained notice comes again on each connect: nothing happens.
	if again := g.up.Apply(ctx(t), n); again.State != client.FirmwareInstalled {
		t.Fatalf("the same notice again: %+v", again)
	}
	if s2, err := g.up.Boot(ctx(t)); err != nil || s2 != s {
		t.Fatalf("second boot: %+v %v", s2, err)
	}
	if v, slot := g.up.Installed(); v != "1.0.0" || slot != "b" {
		t.Errorf("Installed() = %q, %q", v, slot)
	}
	if err := g.up.Notice(ctx(t), n); err != nil {
		t.Errorf("the agent's handler, with a notice already installed: %v", err)
	}
	// The audit log has each step.
	page, err := e.repo.Client.ListAudit(ctx(t), "acme", client.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, en := range page.Items {
		seen[en.Action+"/"+en.Detail["state"]] = true
	}
	for _, want := range []string{"firmware.rollout.create/", "firmware.rollout.report/downloading", "firmware.rollout.report/installing", "firmware.rollout.report/installed", "firmware.targets.publish/"} {
		if !seen[want] {
			t.Errorf("audit has no %s: %v", want, seen)
		}
	}
}

func TestUpdaterRollsBackASlotThatFailsItsFirstStart(t *testing.T) {
	e := newEnv(t)
	e.publish(model, "1.0.0")
	e.publish(model, "1.1.0")
	var healthy sync.Map // version → error
	g := e.gateway(func(c *updater.Config) {
		c.HealthCheck = func(_ context.Context, s updater.Slot) error {
			if err, ok := healthy.Load(s.Version); ok {
				return err.(error)
			}
			return nil
		}
	})
	good := e.install(g, model, "1.0.0")
	healthy.Store("1.1.0", errors.New("the mesh radio does not come up"))
	n := e.rollout(g, model, "1.1.0")
	if r := g.up.Apply(ctx(t), n); r.State != client.FirmwareInstalling {
		t.Fatalf("apply: %+v", r)
	}
	if _, err := g.up.Boot(ctx(t)); err == nil {
		t.Fatal("the first start of a failing slot succeeded")
	}
	// The next start (the watchdog's reboot) rolls it back.
	s, err := g.up.Boot(ctx(t))
	if err != nil || s != good {
		t.Fatalf("after the failed start: %+v %v, want %+v", s, err, good)
	}
	if st := e.cloudState(n.RolloutID, g.serial); st.State != client.FirmwareFailed || st.Reason != updater.ReasonBootFailed {
		t.Fatalf("the cloud shows %+v", st)
	}
}

func TestUpdaterBootRefusesATamperedSlot(t *testing.T) {
	e := newEnv(t)
	e.publish(model, "1.0.0")
	e.publish(model, "1.1.0")
	t.Run("falls back to the other slot", func(t *testing.T) {
		e.t = t
		g := e.gateway(nil)
		first := e.install(g, model, "1.0.0")
		second := e.install(g, model, "1.1.0")
		if err := os.WriteFile(second.Path, []byte("implant"), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := g.up.Boot(ctx(t))
		if err != nil || s != first {
			t.Fatalf("boot with slot %s tampered: %+v %v, want %+v", second.Name, s, err, first)
		}
	})
	t.Run("refuses when no slot verifies", func(t *testing.T) {
		e.t = t
		g := e.gateway(nil)
		s := e.install(g, model, "1.0.0")
		b, _ := os.ReadFile(s.Path)
		b[0] ^= 1
		if err := os.WriteFile(s.Path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := g.up.Boot(ctx(t)); !errors.Is(err, updater.ErrNoTrustedSlot) {
			t.Fatalf("boot: %v, want ErrNoTrustedSlot", err)
		}
	})
	t.Run("refuses metadata not signed by the targets key", func(t *testing.T) {
		e.t = t
		g := e.gateway(nil)
		s := e.install(g, model, "1.0.0")
		// An implant with targets metadata re-signed by another key.
		implant := []byte("implant")
		forged := e.repo.Sign(implant, model, "1.0.0", firmwaretest.Key(t))
		if err := os.WriteFile(s.Path, implant, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(g.dir+"/slot-"+s.Name+".targets.json", forged, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := g.up.Boot(ctx(t)); !errors.Is(err, updater.ErrNoTrustedSlot) {
			t.Fatalf("boot: %v, want ErrNoTrustedSlot", err)
		}
	})
}

// TestUpdaterNoticeReachesTheGatewayRetained runs a rollout end to end:
// the notice is retained on the gateway's down/firmware topic, so a
// gateway that connects after the rollout gets it; applied and booted,
// the cloud shows the gateway installed.
func TestUpdaterNoticeReachesTheGatewayRetained(t *testing.T) {
	e := newEnv(t)
	e.publish(model, "1.0.0")
	g := e.gateway(nil)
	n := e.rollout(g, model, "1.0.0")
	cert := nodetest.Gateway(t, e.n, "acme", g.serial)
	got := make(chan []byte, 4)
	u, err := nodetest.Dial(t, e.n, cert, g.serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	u.Client().AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		if pr.Packet.Topic == gwproto.FirmwareTopic(g.serial) {
			got <- pr.Packet.Payload
		}
		return true, nil
	})
	if _, err := u.Client().Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: gwproto.FirmwareTopic(g.serial), QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		var notice gwproto.FirmwareNotice
		if err := json.Unmarshal(b, &notice); err != nil || notice != n {
			t.Fatalf("notice %s, want %+v", b, n)
		}
		if r := g.up.Apply(ctx(t), notice); r.State != client.FirmwareInstalling {
			t.Fatalf("apply the notice: %+v", r)
		}
	case <-time.After(10 * time.Second * testutil.Slowdown()):
		t.Fatal("no retained notice")
	}
	if s, err := g.up.Boot(ctx(t)); err != nil || s.Version != "1.0.0" {
		t.Fatalf("boot: %+v %v", s, err)
	}
	if st := e.cloudState(n.RolloutID, g.serial); st.State != client.FirmwareInstalled {
		t.Fatalf("the cloud shows %+v", st)
	}
}

// TestUpdaterFollowsARootRotation rotates the root and targets keys after
// the gateway pinned root version 1: it walks to version 2 through TUF
// (each root signed by its predecessor) and installs what the new targets
// key signed; the old targets key no longer publishes.
func TestUpdaterFollowsARootRotation(t *testing.T) {
	e := newEnv(t)
	e.publish(model, "1.0.0")
	g := e.gateway(nil)
	e.install(g, model, "1.0.0")
	// g2 stays on 1.0.0, installed under the old targets key.
	g2 := e.gateway(nil)
	running := e.install(g2, model, "1.0.0")

	newRoot, newTargets := firmwaretest.Key(t), firmwaretest.Key(t)
	root2, err := firmware.NextRoot(e.repo.Root, e.repo.RootKey, newRoot, newTargets.Public().(ed25519.PublicKey), time.Now().AddDate(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	c := e.repo.Client
	if _, err := c.RotateFirmwareRoot(ctx(t), "acme", client.RotateFirmwareRootRequest{Root: root2}); client.ErrorCode(err) != "firmware.signature_invalid" {
		t.Fatalf("a rotation of the targets key without targets signed by it: %v", err)
	}
	// Not signed by the current root key: refused.
	fr, err := metadata.Root().FromBytes(root2)
	if err != nil {
		t.Fatal(err)
	}
	fr.ClearSignatures()
	ns, _ := signature.LoadED25519Signer(newRoot)
	if _, err := fr.Sign(ns); err != nil {
		t.Fatal(err)
	}
	forged, _ := fr.ToBytes(false)
	if _, err := c.RotateFirmwareRoot(ctx(t), "acme", client.RotateFirmwareRootRequest{Root: forged}); client.ErrorCode(err) != "firmware.signature_invalid" {
		t.Fatalf("a root not signed by the current root key: %v", err)
	}
	img := image("1.1.0")
	if _, err := c.UploadFirmwareImage(ctx(t), "acme", img); err != nil {
		t.Fatal(err)
	}
	targets := e.repo.Sign(img, model, "1.1.0", newTargets)
	if _, err := c.RotateFirmwareRoot(ctx(t), "acme", client.RotateFirmwareRootRequest{Root: root2, Targets: targets}); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if err := e.repo.Publish(image("1.2.0"), model, "1.2.0"); client.ErrorCode(err) != "firmware.signature_invalid" {
		t.Fatalf("publish with the old targets key after the rotation: %v", err)
	}
	e.repo.TargetsKey = newTargets
	e.install(g, model, "1.1.0")
	trusted, err := os.ReadFile(g.dir + "/tuf/root.json")
	if err != nil || !bytes.Equal(trusted, root2) {
		t.Fatalf("the gateway trusts %.80s (%v), want root version 2", trusted, err)
	}
	// g2 learns root 2 (a refresh, then a refusal), and still starts the
	// intact slot the old targets key authorised.
	n := e.rollout(g2, model, "1.1.0")
	n.Version = "7.7.7"
	if r := g2.up.Apply(ctx(t), n); r.Reason != updater.ReasonNoTarget {
		t.Fatalf("apply: %+v", r)
	}
	if b, _ := os.ReadFile(g2.dir + "/tuf/root.json"); !bytes.Equal(b, root2) {
		t.Fatal("g2 did not walk to root 2")
	}
	if s, err := g2.up.Boot(ctx(t)); err != nil || s != running {
		t.Fatalf("after the rotation g2 boots %+v (%v), want %+v", s, err, running)
	}
}

// TestUpdaterInstalledDoesNotWaitForAnUpdate: the agent asks Installed for
// every status, and its session's end waits for the status: while an
// update downloads (minutes on a slow link), Installed answers at once
// with the running slot.
func TestUpdaterInstalledDoesNotWaitForAnUpdate(t *testing.T) {
	e := newEnv(t)
	e.publish(model, "1.0.0")
	inReport, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	g := e.gateway(func(c *updater.Config) {
		c.Report = func(ctx context.Context, r client.FirmwareReport) error {
			once.Do(func() { close(inReport); <-release })
			return nil
		}
	})
	n := e.rollout(g, model, "1.0.0")
	applied := make(chan updater.Report, 1)
	go func() { applied <- g.up.Apply(context.Background(), n) }()
	<-inReport // the update is under way, as long as its download takes
	got := make(chan string, 1)
	go func() { _, slot := g.up.Installed(); got <- slot }()
	select {
	case slot := <-got:
		if slot != "a" {
			t.Errorf("Installed during an update: slot %q, want a", slot)
		}
	case <-time.After(5 * time.Second * testutil.Slowdown()):
		t.Error("Installed waited for the update in progress")
	}
	close(release)
	if r := <-applied; r.State != client.FirmwareInstalling {
		t.Fatalf("apply: %+v", r)
	}
}
