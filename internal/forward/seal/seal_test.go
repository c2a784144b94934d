package seal_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"sync"
	"testing"

	"github.com/iotransit/iotransit/internal/forward/seal"
)

// An X25519 key pair written by OpenSSL 3.0 ("openssl genpkey -algorithm
// X25519", "openssl pkey -pubout"), a test fixture only. Its key id was
// computed outside Go: openssl pkey -pubin -outform DER | tail -c 32 |
// sha256sum.
const (
	opensslPrivatePEM = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VuBCIEIDBBI8p+pAliLaOEorVTOIyMSOjfBXHMjTw/RBUGnZ57
-----END PRIVATE KEY-----
`
	opensslPublicPEM = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VuAyEAE8HMpcD6/IHfUihPMuoxPWt9cPVZwNvC3QRPgaB8K08=
-----END PUBLIC KEY-----
`
	opensslKeyID = "69122b49e5af6008"
)

func newPair(t testing.TB) (*seal.Sealer, *seal.Opener) {
	t.Helper()
	privPEM, pubPEM, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	o, err := seal.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	return s, o
}

// isOpenError reports whether err is one of the two errors Open documents.
func isOpenError(err error) bool {
	return errors.Is(err, seal.ErrMalformed) || errors.Is(err, seal.ErrNotForThisKey)
}

func TestSealRoundTrip(t *testing.T) {
	s, o := newPair(t)
	if s.KeyID() != o.KeyID() || len(s.KeyID()) != 16 {
		t.Fatalf("key ids: sealer %q, opener %q (want the same 16 hex digits)", s.KeyID(), o.KeyID())
	}
	big := make([]byte, 1<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		plaintext []byte
	}{
		{"empty", []byte{}},
		{"nil", nil},
		{"small", []byte(`[{"tsmId":12100,"tsmTs":1700000000,"temp":21.5}]`)},
		{"1MiB", big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sealed, err := s.Seal(tc.plaintext)
			if err != nil {
				t.Fatal(err)
			}
			if len(sealed) != len(tc.plaintext)+seal.Overhead {
				t.Errorf("sealed length %d, want %d+%d", len(sealed), len(tc.plaintext), seal.Overhead)
			}
			if len(tc.plaintext) > 16 && bytes.Contains(sealed, tc.plaintext[:16]) {
				t.Error("the sealed payload contains the plaintext")
			}
			if id, err := seal.PayloadKeyID(sealed); err != nil || id != s.KeyID() {
				t.Errorf("PayloadKeyID = %q, %v; want %q", id, err, s.KeyID())
			}
			got, err := o.Open(sealed)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || !bytes.Equal(got, tc.plaintext) {
				t.Fatalf("opened %d bytes (nil %v), want the %d sealed", len(got), got == nil, len(tc.plaintext))
			}
		})
	}
}

func TestSealOutputDiffersEachTime(t *testing.T) {
	s, o := newPair(t)
	msg := []byte("the same message")
	a, err := s.Seal(msg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Seal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Fatal("sealing twice gave the same bytes")
	}
	if bytes.Equal(a[19:51], b[19:51]) {
		t.Error("sealing twice reused the encapsulated key")
	}
	for _, p := range [][]byte{a, b} {
		if got, err := o.Open(p); err != nil || !bytes.Equal(got, msg) {
			t.Errorf("Open = %q, %v", got, err)
		}
	}
}

func TestSealWrongKeyIsNotForThisKey(t *testing.T) {
	s, _ := newPair(t)
	_, other := newPair(t)
	sealed, err := s.Seal([]byte("for someone else"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := other.Open(sealed)
	if !errors.Is(err, seal.ErrNotForThisKey) || got != nil {
		t.Fatalf("Open with another key = %q, %v; want ErrNotForThisKey", got, err)
	}
	// The same key id but another key (as if ids collided): the AEAD fails,
	// still ErrNotForThisKey.
	forged := append([]byte(nil), sealed...)
	id, _ := hex.DecodeString(other.KeyID())
	copy(forged[11:19], id)
	got, err = other.Open(forged)
	if !errors.Is(err, seal.ErrNotForThisKey) || got != nil {
		t.Fatalf("Open of a payload with this key's id but sealed to another key = %q, %v; want ErrNotForThisKey", got, err)
	}
}

func TestSealEveryByteFlipFails(t *testing.T) {
	s, o := newPair(t)
	msg := bytes.Repeat([]byte("sensor data "), 8) // 96 bytes: every byte is checked
	sealed, err := s.Seal(msg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range sealed {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			p := append([]byte(nil), sealed...)
			p[i] ^= mask
			got, err := o.Open(p)
			if err == nil || got != nil {
				t.Fatalf("byte %d ^ %#02x: Open = %d bytes, %v; want an error", i, mask, len(got), err)
			}
			if !isOpenError(err) {
				t.Fatalf("byte %d ^ %#02x: error %v is neither ErrMalformed nor ErrNotForThisKey", i, mask, err)
			}
			if i < 11 && !errors.Is(err, seal.ErrMalformed) {
				t.Errorf("byte %d (magic, version, suite) ^ %#02x: %v, want ErrMalformed", i, mask, err)
			}
		}
	}
}

func TestSealTruncationFails(t *testing.T) {
	s, o := newPair(t)
	sealed, err := s.Seal([]byte("truncate me"))
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(sealed); n++ {
		got, err := o.Open(sealed[:n])
		if err == nil || got != nil || !isOpenError(err) {
			t.Fatalf("truncated to %d bytes: Open = %q, %v; want ErrMalformed or ErrNotForThisKey", n, got, err)
		}
		if n < seal.Overhead && !errors.Is(err, seal.ErrMalformed) {
			t.Errorf("truncated to %d bytes (< %d): %v, want ErrMalformed", n, seal.Overhead, err)
		}
	}
	// Appended bytes are refused too.
	if _, err := o.Open(append(append([]byte(nil), sealed...), 0)); !isOpenError(err) {
		t.Errorf("one byte appended: %v", err)
	}
}

func TestSealOpenRefusesOtherInput(t *testing.T) {
	_, o := newPair(t)
	for _, tc := range []struct {
		name  string
		input []byte
	}{
		{"empty", nil},
		{"json", []byte(`[{"tsmId":1}]`)},
		{"magic only", []byte("IOTH")},
		{"version 2", append([]byte("IOTH\x02\x00\x20\x00\x01\x00\x02"), make([]byte, 100)...)},
		{"chacha suite", append([]byte("IOTH\x01\x00\x20\x00\x01\x00\x03"), make([]byte, 100)...)},
		{"P-256 kem", append([]byte("IOTH\x01\x00\x10\x00\x01\x00\x02"), make([]byte, 100)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := o.Open(tc.input)
			if !errors.Is(err, seal.ErrMalformed) || got != nil {
				t.Fatalf("Open = %q, %v; want ErrMalformed", got, err)
			}
			if _, err := seal.PayloadKeyID(tc.input); !errors.Is(err, seal.ErrMalformed) {
				t.Errorf("PayloadKeyID: %v, want ErrMalformed", err)
			}
		})
	}
	// An all-zero (low-order) encapsulated key with this key's id.
	id, _ := hex.DecodeString(o.KeyID())
	p := append([]byte("IOTH\x01\x00\x20\x00\x01\x00\x02"), id...)
	p = append(p, make([]byte, 32+16)...)
	if got, err := o.Open(p); !errors.Is(err, seal.ErrNotForThisKey) || got != nil {
		t.Errorf("zero enc: Open = %q, %v; want ErrNotForThisKey", got, err)
	}
}

func pemOf(t *testing.T, typ string, der []byte, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestSealKeyParsersRefuseOtherKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256DH, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519Priv, x25519Pub, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	rsaPKCS8, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaPKCS8PEM := pemOf(t, "PRIVATE KEY", rsaPKCS8, err)
	rsaPKIX, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	rsaPKIXPEM := pemOf(t, "PUBLIC KEY", rsaPKIX, err)
	p256PKCS8, err := x509.MarshalPKCS8PrivateKey(p256)
	p256PKCS8PEM := pemOf(t, "PRIVATE KEY", p256PKCS8, err)
	p256PKIX, err := x509.MarshalPKIXPublicKey(&p256.PublicKey)
	p256PKIXPEM := pemOf(t, "PUBLIC KEY", p256PKIX, err)
	p256SEC1, err := x509.MarshalECPrivateKey(p256)
	p256SEC1PEM := pemOf(t, "EC PRIVATE KEY", p256SEC1, err)
	p256DHPKCS8, err := x509.MarshalPKCS8PrivateKey(p256DH)
	p256DHPKCS8PEM := pemOf(t, "PRIVATE KEY", p256DHPKCS8, err)
	p256DHPKIX, err := x509.MarshalPKIXPublicKey(p256DH.PublicKey())
	p256DHPKIXPEM := pemOf(t, "PUBLIC KEY", p256DHPKIX, err)
	edPKCS8, err := x509.MarshalPKCS8PrivateKey(edPriv)
	edPKCS8PEM := pemOf(t, "PRIVATE KEY", edPKCS8, err)
	edPKIX, err := x509.MarshalPKIXPublicKey(edPub)
	edPKIXPEM := pemOf(t, "PUBLIC KEY", edPKIX, err)
	x25519Block, _ := pem.Decode(x25519Pub)
	zero, err := ecdh.X25519().NewPublicKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	zeroPKIX, err := x509.MarshalPKIXPublicKey(zero)
	zeroPEM := pemOf(t, "PUBLIC KEY", zeroPKIX, err)

	for _, tc := range []struct {
		name          string
		pem           []byte
		publicRefused bool // ParsePublicKey refuses it
		privRefused   bool // ParsePrivateKey refuses it
	}{
		{"RSA PKCS#8 private", rsaPKCS8PEM, true, true},
		{"RSA PKCS#1 private", pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey), nil), true, true},
		{"RSA public", rsaPKIXPEM, true, true},
		{"P-256 ECDSA PKCS#8 private", p256PKCS8PEM, true, true},
		{"P-256 SEC1 private", p256SEC1PEM, true, true},
		{"P-256 public", p256PKIXPEM, true, true},
		{"P-256 ECDH PKCS#8 private", p256DHPKCS8PEM, true, true},
		{"P-256 ECDH public", p256DHPKIXPEM, true, true},
		{"Ed25519 private", edPKCS8PEM, true, true},
		{"Ed25519 public", edPKIXPEM, true, true},
		{"X25519 private given as public", x25519Priv, true, false},
		{"X25519 public given as private", x25519Pub, false, true},
		{"X25519 public, wrong PEM type", pemOf(t, "CERTIFICATE", x25519Block.Bytes, nil), true, true},
		{"X25519 public, damaged DER", pemOf(t, "PUBLIC KEY", x25519Block.Bytes[:20], nil), true, true},
		{"X25519 all-zero (low-order) public", zeroPEM, true, true},
		{"empty", nil, true, true},
		{"not PEM", []byte("MCowBQYDK2VuAyEAE8HMpcD6/IHfUihPMuoxPWt9cPVZwNvC3QRPgaB8K08="), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := seal.ParsePublicKey(tc.pem)
			if tc.publicRefused != (err != nil) {
				t.Errorf("ParsePublicKey: %v (refusal wanted: %v)", err, tc.publicRefused)
			}
			if err != nil && (!seal.ErrKeyInvalid.Is(err) || s != nil) {
				t.Errorf("ParsePublicKey: %v, want a seal.key_invalid fault", err)
			}
			o, err := seal.ParsePrivateKey(tc.pem)
			if tc.privRefused != (err != nil) {
				t.Errorf("ParsePrivateKey: %v (refusal wanted: %v)", err, tc.privRefused)
			}
			if err != nil && (!seal.ErrKeyInvalid.Is(err) || o != nil) {
				t.Errorf("ParsePrivateKey: %v, want a seal.key_invalid fault", err)
			}
		})
	}
}

func TestSealParsesOpenSSLKeys(t *testing.T) {
	s, err := seal.ParsePublicKey([]byte(opensslPublicPEM))
	if err != nil {
		t.Fatal(err)
	}
	o, err := seal.ParsePrivateKey([]byte(opensslPrivatePEM))
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID() != opensslKeyID || o.KeyID() != opensslKeyID {
		t.Fatalf("key ids %q, %q; want %q (computed by openssl and sha256sum)", s.KeyID(), o.KeyID(), opensslKeyID)
	}
	sealed, err := s.Seal([]byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := o.Open(sealed); err != nil || string(got) != "hello" {
		t.Fatalf("Open = %q, %v", got, err)
	}
}

// lowLevel is the documented format built by hand from crypto/hpke and
// crypto/x509, an independent path to the package's own code.
type lowLevel struct {
	priv hpke.PrivateKey
	pub  hpke.PublicKey
	hdr  []byte
	info []byte
}

func newLowLevel(t *testing.T, privPEM []byte) *lowLevel {
	t.Helper()
	block, _ := pem.Decode(privPEM)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := hpke.DHKEM(ecdh.X25519()).NewPrivateKey(k.(*ecdh.PrivateKey).Bytes())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(priv.PublicKey().Bytes())
	hdr := []byte("IOTH")
	hdr = append(hdr, 0x01)
	hdr = binary.BigEndian.AppendUint16(hdr, 0x0020)
	hdr = binary.BigEndian.AppendUint16(hdr, 0x0001)
	hdr = binary.BigEndian.AppendUint16(hdr, 0x0002)
	hdr = append(hdr, sum[:8]...)
	return &lowLevel{priv: priv, pub: priv.PublicKey(), hdr: hdr, info: append([]byte("iotransit/forward/v1"), hdr...)}
}

func TestSealInteropWithLowLevelHPKE(t *testing.T) {
	privPEM, pubPEM, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ll := newLowLevel(t, privPEM)
	s, err := seal.ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	o, err := seal.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	if want := hex.EncodeToString(ll.hdr[11:19]); s.KeyID() != want {
		t.Fatalf("KeyID %q, want %q", s.KeyID(), want)
	}
	msg := []byte(`[{"tsmId":12100,"tsmTs":1700000000,"tsmTuid":"TSPR04","temp":21.5}]`)

	t.Run("hpke.Seal opened by seal.Opener", func(t *testing.T) {
		ct, err := hpke.Seal(ll.pub, hpke.HKDFSHA256(), hpke.AES256GCM(), ll.info, msg)
		if err != nil {
			t.Fatal(err)
		}
		payload := append(append([]byte(nil), ll.hdr...), ct...)
		got, err := o.Open(payload)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("Open = %q, %v", got, err)
		}
	})
	t.Run("seal.Sealer opened by hpke.NewRecipient", func(t *testing.T) {
		payload, err := s.Seal(msg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(payload[:19], ll.hdr) {
			t.Fatalf("header % x, want % x", payload[:19], ll.hdr)
		}
		enc, ct := payload[19:51], payload[51:]
		r, err := hpke.NewRecipient(enc, ll.priv, hpke.HKDFSHA256(), hpke.AES256GCM(), ll.info)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Open(nil, ct)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("Recipient.Open = %q, %v", got, err)
		}
		// Without the header in the info it must not open.
		if _, err := hpke.Open(ll.priv, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte("iotransit/forward/v1"), payload[19:]); err == nil {
			t.Error("opened with an info that lacks the header")
		}
	})
}

func TestSealConcurrentUse(t *testing.T) {
	s, o := newPair(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			msg := []byte{byte(i), 1, 2, 3}
			for range 20 {
				p, err := s.Seal(msg)
				if err != nil {
					errs <- err
					return
				}
				got, err := o.Open(p)
				if err != nil || !bytes.Equal(got, msg) {
					errs <- errors.Join(err, errors.New("round trip differs"))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func FuzzOpen(f *testing.F) {
	s, o := newPair(f)
	for _, msg := range []string{"", "x", `[{"tsmId":1}]`} {
		p, err := s.Seal([]byte(msg))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
		f.Add(p[:seal.Overhead-1])
		f.Add(p[:19])
	}
	f.Add([]byte{})
	f.Add([]byte("IOTH"))
	f.Add([]byte(`[{"tsmId":1}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := o.Open(data)
		if err != nil {
			if got != nil || !isOpenError(err) {
				t.Fatalf("Open = %d bytes, %v", len(got), err)
			}
			return
		}
		if len(got) != len(data)-seal.Overhead {
			t.Fatalf("opened %d bytes from %d", len(got), len(data))
		}
		_, _ = seal.PayloadKeyID(data)
	})
}

func BenchmarkSeal(b *testing.B) {
	s, _ := newPair(b)
	rec := []byte(`{"tsmId":12100,"tsmTs":1700000000,"temp":21.5},`)
	batch := bytes.Repeat(rec, 20*1024/len(rec)+1)[:20*1024]
	b.SetBytes(int64(len(batch)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Seal(batch); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	s, o := newPair(b)
	batch := make([]byte, 20*1024)
	sealed, err := s.Seal(batch)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(batch)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := o.Open(sealed); err != nil {
			b.Fatal(err)
		}
	}
}
