package egress_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward/egress"
)

func TestEgressInternalAddresses(t *testing.T) {
	tests := []struct {
		name     string
		addr     string
		internal bool
	}{
		// IPv4 loopback, the whole /8.
		{"v4 loopback", "127.0.0.1", true},
		{"v4 loopback other", "127.1.2.3", true},
		{"v4 loopback top", "127.255.255.254", true},
		// RFC 1918.
		{"10/8 first", "10.0.0.0", true},
		{"10/8", "10.1.2.3", true},
		{"10/8 last", "10.255.255.255", true},
		{"below 10/8", "9.255.255.255", false},
		{"above 10/8", "11.0.0.0", false},
		{"below 172.16/12", "172.15.255.255", false},
		{"172.16/12 first", "172.16.0.0", true},
		{"172.16/12 last", "172.31.255.255", true},
		{"above 172.16/12", "172.32.0.0", false},
		{"192.168/16 first", "192.168.0.0", true},
		{"192.168/16", "192.168.1.1", true},
		{"192.168/16 last", "192.168.255.255", true},
		{"below 192.168/16", "192.167.255.255", false},
		{"above 192.168/16", "192.169.0.0", false},
		// Link-local: cloud metadata services.
		{"cloud metadata", "169.254.169.254", true},
		{"v4 link-local first", "169.254.0.0", true},
		{"v4 link-local last", "169.254.255.255", true},
		{"above v4 link-local", "169.255.0.0", false},
		// Shared address space (carrier-grade NAT), RFC 6598.
		{"below 100.64/10", "100.63.255.255", false},
		{"100.64/10 first", "100.64.0.0", true},
		{"100.64/10 last", "100.127.255.255", true},
		{"above 100.64/10", "100.128.0.0", false},
		// "This network".
		{"unspecified v4", "0.0.0.0", true},
		{"0/8", "0.1.2.3", true},
		{"0/8 last", "0.255.255.255", true},
		{"above 0/8", "1.0.0.0", false},
		// Benchmarking, RFC 2544.
		{"below 198.18/15", "198.17.255.255", false},
		{"198.18/15 first", "198.18.0.0", true},
		{"198.18/15 last", "198.19.255.255", true},
		{"above 198.18/15", "198.20.0.0", false},
		// Multicast.
		{"v4 multicast first", "224.0.0.0", true},
		{"v4 link-local multicast", "224.0.0.251", true},
		{"v4 multicast SSDP", "239.255.255.250", true},
		{"v4 multicast last", "239.255.255.255", true},
		{"v6 multicast all nodes", "ff02::1", true},
		{"v6 multicast interface-local", "ff01::1", true},
		{"v6 multicast site", "ff05::1:3", true},
		{"v6 multicast global", "ff0e::1", true},
		// IPv6.
		{"v6 loopback", "::1", true},
		{"v6 unspecified", "::", true},
		{"v6 link-local", "fe80::1", true},
		{"v6 link-local with zone", "fe80::1%eth0", true},
		{"v6 link-local last", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
		{"ULA fc00::/7 first", "fc00::", true},
		{"ULA fd", "fd12:3456:789a::1", true},
		{"ULA last", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
		{"AWS v6 metadata", "fd00:ec2::254", true},
		{"below ULA", "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
		// IPv4-mapped IPv6.
		{"mapped loopback", "::ffff:127.0.0.1", true},
		{"mapped 10/8", "::ffff:10.0.0.1", true},
		{"mapped metadata", "::ffff:169.254.169.254", true},
		{"mapped unspecified", "::ffff:0.0.0.0", true},
		{"mapped public", "::ffff:8.8.8.8", false},
		// NAT64 (RFC 6052 well-known prefix).
		{"NAT64 of 127.0.0.1", "64:ff9b::7f00:1", true},
		{"NAT64 of 10.0.0.1", "64:ff9b::a00:1", true},
		{"NAT64 of metadata", "64:ff9b::a9fe:a9fe", true},
		{"NAT64 of 192.168.1.1 dotted", "64:ff9b::192.168.1.1", true},
		// Public.
		{"Cloudflare DNS", "1.1.1.1", false},
		{"Google DNS", "8.8.8.8", false},
		{"Cloudflare DNS v6", "2606:4700::1111", false},
		{"Google DNS v6", "2001:4860:4860::8888", false},
		{"public 172.217", "172.217.16.142", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := netip.MustParseAddr(tc.addr)
			if got := egress.Internal(a); got != tc.internal {
				t.Errorf("Internal(%s) = %v, want %v", a, got, tc.internal)
			}
		})
	}
	t.Run("zero Addr", func(t *testing.T) {
		if !egress.Internal(netip.Addr{}) {
			t.Error("the invalid zero Addr is not internal")
		}
	})
}

// dnsServer is a real DNS server on loopback UDP that answers A and AAAA
// queries from a table (anything else: NXDOMAIN), so the policy can be
// driven through Go's own resolver.
type dnsServer struct {
	conn    net.PacketConn
	answers map[string][]netip.Addr // lower-case name without the final dot
}

func startDNS(t *testing.T, answers map[string][]netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{conn: pc, answers: answers}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.serve()
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	addr := pc.LocalAddr().String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		},
	}
}

func (s *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := s.answer(buf[:n]); resp != nil {
			s.conn.WriteTo(resp, from)
		}
	}
}

// answer builds the response to one query (RFC 1035 §4).
func (s *dnsServer) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	// The question: a name of labels, then type and class.
	var labels []string
	i := 12
	for {
		if i >= len(q) {
			return nil
		}
		l := int(q[i])
		if l == 0 {
			i++
			break
		}
		if l > 63 || i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i : i+2])
	question := q[12 : i+4]
	addrs, known := s.answers[strings.ToLower(strings.Join(labels, "."))]
	var rrs [][]byte
	for _, a := range addrs {
		var rr []byte
		switch {
		case qtype == 1 && a.Is4():
			b := a.As4()
			rr = append([]byte{0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4}, b[:]...)
		case qtype == 28 && a.Is6():
			b := a.As16()
			rr = append([]byte{0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16}, b[:]...)
		default:
			continue
		}
		rrs = append(rrs, rr)
	}
	flags := uint16(0x8180) // response, recursion desired and available
	if !known {
		flags |= 3 // NXDOMAIN
	}
	resp := binary.BigEndian.AppendUint16(nil, binary.BigEndian.Uint16(q[0:2]))
	resp = binary.BigEndian.AppendUint16(resp, flags)
	resp = binary.BigEndian.AppendUint16(resp, 1)
	resp = binary.BigEndian.AppendUint16(resp, uint16(len(rrs)))
	resp = append(resp, 0, 0, 0, 0)
	resp = append(resp, question...)
	for _, rr := range rrs {
		resp = append(resp, rr...)
	}
	return resp
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func wantFault(t *testing.T, err error, def *fault.Definition) {
	t.Helper()
	if !def.Is(err) {
		t.Fatalf("error %v, want fault %s", err, def.Code())
	}
}

func TestEgressPolicyCheckHost(t *testing.T) {
	ctx := context.Background()
	resolver := startDNS(t, map[string][]netip.Addr{
		"public.test":    addrs("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"),
		"loopback.test":  addrs("127.0.0.1"),
		"metadata.test":  addrs("169.254.169.254"),
		"mixed.test":     addrs("93.184.216.34", "10.0.0.7"),
		"mixed6.test":    addrs("93.184.216.34", "fd00::7"),
		"nat64.test":     addrs("64:ff9b::7f00:1"),
		"mapped6.test":   addrs("::ffff:192.168.0.1"),
		"noaddress.test": nil,
	})
	strict := egress.Policy{Resolver: resolver}
	tests := []struct {
		name string
		host string
		want *fault.Definition // nil: allowed
	}{
		{"empty host", "", egress.ErrTargetInvalid},
		{"public v4 literal", "8.8.8.8", nil},
		{"public v6 literal", "2606:4700::1111", nil},
		{"loopback literal", "127.0.0.1", egress.ErrPrivateTarget},
		{"loopback literal other", "127.1.2.3", egress.ErrPrivateTarget},
		{"private literal", "10.0.0.1", egress.ErrPrivateTarget},
		{"metadata literal", "169.254.169.254", egress.ErrPrivateTarget},
		{"v6 loopback literal", "::1", egress.ErrPrivateTarget},
		{"mapped literal", "::ffff:127.0.0.1", egress.ErrPrivateTarget},
		{"NAT64 literal", "64:ff9b::7f00:1", egress.ErrPrivateTarget},
		{"name to public", "public.test", nil},
		{"name to loopback", "loopback.test", egress.ErrPrivateTarget},
		{"name to metadata", "metadata.test", egress.ErrPrivateTarget},
		{"name to public and private", "mixed.test", egress.ErrPrivateTarget},
		{"name to public and ULA", "mixed6.test", egress.ErrPrivateTarget},
		{"name to NAT64 loopback", "nat64.test", egress.ErrPrivateTarget},
		{"name to mapped private", "mapped6.test", egress.ErrPrivateTarget},
		{"name that does not exist", "nxdomain.test", egress.ErrTargetInvalid},
		{"name without addresses", "noaddress.test", egress.ErrTargetInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := strict.CheckHost(ctx, tc.host)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("CheckHost(%q) = %v, want nil", tc.host, err)
				}
				return
			}
			wantFault(t, err, tc.want)
		})
	}

	// The system resolver: localhost is loopback, .invalid never resolves
	// (RFC 6761).
	t.Run("localhost", func(t *testing.T) {
		wantFault(t, egress.Policy{}.CheckHost(ctx, "localhost"), egress.ErrPrivateTarget)
	})
	t.Run("unresolvable name", func(t *testing.T) {
		err := egress.Policy{}.CheckHost(ctx, "nonexistent.invalid")
		wantFault(t, err, egress.ErrTargetInvalid)
		if e, _ := fault.As(err); !strings.Contains(e.PublicMessage(), `"nonexistent.invalid" does not resolve`) {
			t.Errorf("public message %q does not name the host", e.PublicMessage())
		}
	})

	allow := egress.Policy{AllowPrivate: true, Resolver: resolver}
	for _, host := range []string{"127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "localhost", "loopback.test", "mixed.test", "8.8.8.8"} {
		t.Run("AllowPrivate "+host, func(t *testing.T) {
			if err := allow.CheckHost(ctx, host); err != nil {
				t.Fatalf("CheckHost(%q) with AllowPrivate = %v", host, err)
			}
		})
	}
	t.Run("AllowPrivate empty host", func(t *testing.T) {
		wantFault(t, allow.CheckHost(ctx, ""), egress.ErrTargetInvalid)
	})
}

// acceptLog is a TCP listener on a loopback address that counts and
// records what it accepts.
type acceptLog struct {
	l        net.Listener
	accepted chan net.Conn
}

func listenLoopback(t *testing.T, network, addr string) *acceptLog {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	a := &acceptLog{l: l, accepted: make(chan net.Conn, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			a.accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		close(a.accepted)
		for c := range a.accepted {
			c.Close()
		}
	})
	return a
}

func (a *acceptLog) port() string {
	return strconv.Itoa(a.l.Addr().(*net.TCPAddr).Port)
}

// onlyAccepted checks that the first connection the listener accepted is
// the one from local: a connection the policy refused never reached it
// (it would have been queued first).
func (a *acceptLog) onlyAccepted(t *testing.T, local net.Addr) {
	t.Helper()
	select {
	case c := <-a.accepted:
		if c.RemoteAddr().String() != local.String() {
			t.Fatalf("the listener accepted a connection from %s before the allowed one from %s", c.RemoteAddr(), local)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the allowed connection was not accepted")
	}
	select {
	case c := <-a.accepted:
		t.Fatalf("the listener accepted another connection, from %s", c.RemoteAddr())
	default:
	}
}

func TestEgressPolicyDialer(t *testing.T) {
	ctx := context.Background()
	resolver := startDNS(t, map[string][]netip.Addr{
		"rebind.test": addrs("127.0.0.1"),
	})
	for _, tc := range []struct {
		name, network, listen, host string
	}{
		{"v4 literal", "tcp4", "127.0.0.1:0", "127.0.0.1"},
		{"v4 other loopback", "tcp4", "127.1.2.3:0", "127.1.2.3"},
		{"v6 literal", "tcp6", "[::1]:0", "::1"},
		{"localhost", "tcp4", "127.0.0.1:0", "localhost"},
		{"name resolving to loopback", "tcp4", "127.0.0.1:0", "rebind.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listenLoopback(t, tc.network, tc.listen)
			target := net.JoinHostPort(tc.host, ln.port())

			conn, err := egress.Policy{Resolver: resolver}.Dialer(5*time.Second).DialContext(ctx, "tcp", target)
			if err == nil {
				conn.Close()
				t.Fatalf("dial %s: connected, want refused", target)
			}
			if !egress.IsRefused(err) {
				t.Fatalf("dial %s: %v, want a refusal (IsRefused)", target, err)
			}

			conn, err = egress.Policy{AllowPrivate: true, Resolver: resolver}.Dialer(5*time.Second).DialContext(ctx, "tcp", target)
			if err != nil {
				t.Fatalf("dial %s with AllowPrivate: %v", target, err)
			}
			defer conn.Close()
			ln.onlyAccepted(t, conn.LocalAddr())
		})
	}
	t.Run("IsRefused is false for other errors", func(t *testing.T) {
		if egress.IsRefused(errors.New("connection refused")) || egress.IsRefused(nil) {
			t.Error("IsRefused matched a non-policy error")
		}
	})
}

// testPKI is a CA, a certificate it signed for 127.0.0.1 and
// endpoint.test, its key, and a key that does not match it.
type testPKI struct {
	caPEM    string
	leaf     tls.Certificate
	certPEM  string
	keyPEM   string
	otherKey string // a key that does not match certPEM
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"endpoint.test"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherDER, err := x509.MarshalPKCS8PrivateKey(other)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{
		caPEM:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		certPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})),
		keyPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		otherKey: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER})),
	}
	p.leaf, err = tls.X509KeyPair([]byte(p.certPEM), []byte(p.keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// quiet drops the test servers' handshake failure logs (the failures are
// what the tests check).
var quiet = log.New(io.Discard, "", 0)

// get makes one HTTPS request through the egress dialer and TLS config.
func get(t *testing.T, url string, o egress.TLSOptions) error {
	t.Helper()
	cfg, err := egress.TLSConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{
		DialContext:     egress.Policy{AllowPrivate: true}.Dialer(5 * time.Second).DialContext,
		TLSClientConfig: cfg,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil
}

func TestEgressTLSConfig(t *testing.T) {
	server := newTestPKI(t, "endpoint")
	client := newTestPKI(t, "iotransit")
	other := newTestPKI(t, "other")

	t.Run("defaults", func(t *testing.T) {
		cfg, err := egress.TLSConfig(egress.TLSOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.MinVersion < tls.VersionTLS12 {
			t.Errorf("MinVersion %#x, want TLS 1.2 or later", cfg.MinVersion)
		}
		if cfg.RootCAs != nil || len(cfg.Certificates) != 0 || cfg.InsecureSkipVerify {
			t.Errorf("defaults: RootCAs %v, %d certificates, InsecureSkipVerify %v", cfg.RootCAs, len(cfg.Certificates), cfg.InsecureSkipVerify)
		}
	})
	t.Run("server name", func(t *testing.T) {
		cfg, err := egress.TLSConfig(egress.TLSOptions{ServerName: "endpoint.test"})
		if err != nil || cfg.ServerName != "endpoint.test" {
			t.Fatalf("ServerName %q, %v", cfg.ServerName, err)
		}
	})

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{server.leaf}}
	srv.Config.ErrorLog = quiet
	srv.StartTLS()
	t.Cleanup(srv.Close)

	t.Run("pinned CA verifies the endpoint", func(t *testing.T) {
		if err := get(t, srv.URL, egress.TLSOptions{CAPEM: server.caPEM}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("pinned CA and a server name", func(t *testing.T) {
		if err := get(t, srv.URL, egress.TLSOptions{CAPEM: server.caPEM, ServerName: "endpoint.test"}); err != nil {
			t.Fatal(err)
		}
		if err := get(t, srv.URL, egress.TLSOptions{CAPEM: server.caPEM, ServerName: "someone-else.test"}); err == nil {
			t.Fatal("connected although the certificate is not for the server name")
		}
	})
	t.Run("another pinned CA is refused", func(t *testing.T) {
		var ue x509.UnknownAuthorityError
		if err := get(t, srv.URL, egress.TLSOptions{CAPEM: other.caPEM}); !errors.As(err, &ue) {
			t.Fatalf("%v, want an unknown authority error", err)
		}
	})
	t.Run("system roots refuse a private CA", func(t *testing.T) {
		if err := get(t, srv.URL, egress.TLSOptions{}); err == nil {
			t.Fatal("connected to an endpoint whose CA is not a system root")
		}
	})

	old := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	old.TLS = &tls.Config{Certificates: []tls.Certificate{server.leaf}, MaxVersion: tls.VersionTLS11}
	old.Config.ErrorLog = quiet
	old.StartTLS()
	t.Cleanup(old.Close)
	t.Run("TLS 1.1 endpoint refused", func(t *testing.T) {
		err := get(t, old.URL, egress.TLSOptions{CAPEM: server.caPEM})
		if err == nil || !strings.Contains(err.Error(), "protocol version") {
			t.Fatalf("%v, want a protocol version failure", err)
		}
	})

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(client.caPEM))
	mtls := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	mtls.TLS = &tls.Config{Certificates: []tls.Certificate{server.leaf}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	mtls.Config.ErrorLog = quiet
	mtls.StartTLS()
	t.Cleanup(mtls.Close)
	t.Run("client certificate for mutual TLS", func(t *testing.T) {
		if err := get(t, mtls.URL, egress.TLSOptions{CAPEM: server.caPEM, CertPEM: client.certPEM, KeyPEM: client.keyPEM}); err != nil {
			t.Fatal(err)
		}
		if err := get(t, mtls.URL, egress.TLSOptions{CAPEM: server.caPEM}); err == nil {
			t.Fatal("mutual TLS endpoint accepted a client without a certificate")
		}
	})

	for _, tc := range []struct {
		name string
		o    egress.TLSOptions
	}{
		{"CA not PEM", egress.TLSOptions{CAPEM: "not a certificate"}},
		{"CA PEM of a key", egress.TLSOptions{CAPEM: client.keyPEM}},
		{"CA damaged", egress.TLSOptions{CAPEM: server.caPEM[:len(server.caPEM)/2]}},
		{"certificate and another key", egress.TLSOptions{CertPEM: client.certPEM, KeyPEM: client.otherKey}},
		{"certificate without key", egress.TLSOptions{CertPEM: client.certPEM}},
		{"key without certificate", egress.TLSOptions{KeyPEM: client.keyPEM}},
		{"certificate not PEM", egress.TLSOptions{CertPEM: "junk", KeyPEM: client.keyPEM}},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			cfg, err := egress.TLSConfig(tc.o)
			if cfg != nil {
				t.Error("a configuration came back with the error")
			}
			e, ok := fault.As(err)
			if !ok || e.Code() != "forward.tls_invalid" {
				t.Fatalf("%v, want fault forward.tls_invalid", err)
			}
			if strings.Contains(e.PublicMessage(), "PRIVATE KEY") || strings.Contains(e.PublicMessage(), "BEGIN") {
				t.Errorf("the public message shows PEM material: %q", e.PublicMessage())
			}
		})
	}
}
