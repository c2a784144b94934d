// Package egress guards iotransit's outbound connections to customer
// endpoints: targets that resolve to loopback, private, link-local or other
// internal addresses are refused (SSRF) unless the operator allows them,
// checked both when an integration is saved and on every connection (after
// DNS resolution, so a rebinding name cannot slip through), and TLS is 1.2+
// with an optional pinned CA and client certificate.
package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/iotransit/iotransit/internal/fault"
)

// Faults a client can see.
var (
	ErrPrivateTarget = fault.Define("forward.target_private", fault.InvalidArgument, "the target resolves to a loopback, private or link-local address, which this server does not allow")
	ErrTargetInvalid = fault.Define("forward.target_invalid", fault.InvalidArgument, "the target address is not valid")
	ErrTLSInvalid    = fault.Define("forward.tls_invalid", fault.InvalidArgument, "the TLS material is not valid PEM")
)

// Policy decides which addresses may be dialled.
type Policy struct {
	// AllowPrivate permits loopback, private and link-local targets
	// (--allow-private-targets; on in --dev).
	AllowPrivate bool
	// Resolver resolves host names (nil: net.DefaultResolver).
	Resolver *net.Resolver
}

// internalPrefixes are ranges no customer endpoint lives in, beyond what
// netip's predicates cover.
var internalPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // shared address space (CGNAT)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and broadcast
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated)
	netip.MustParsePrefix("100::/64"),        // discard
	netip.MustParsePrefix("2001::/32"),       // Teredo
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated)
}

// Prefixes that embed an IPv4 address, checked again on that address.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	nat64Loc  = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Internal reports whether addr is an address customers must not make us
// reach: loopback, private (RFC 1918, ULA), link-local (cloud metadata
// services), unspecified, multicast, the special ranges above, and IPv6
// forms that embed an internal IPv4 address (mapped, NAT64, 6to4).
func Internal(addr netip.Addr) bool {
	if !addr.IsValid() {
		return true
	}
	addr = addr.Unmap()
	if addr.Is6() {
		b := addr.As16()
		switch {
		case nat64.Contains(addr), nat64Loc.Contains(addr):
			if Internal(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})) {
				return true
			}
		case sixToFour.Contains(addr):
			if Internal(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})) {
				return true
			}
		}
	}
	if addr.IsLoopback() || addr.IsPrivate() || addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() ||
		addr.IsInterfaceLocalMulticast() || addr.IsMulticast() || addr.IsUnspecified() {
		return true
	}
	for _, p := range internalPrefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func (p Policy) resolver() *net.Resolver {
	if p.Resolver != nil {
		return p.Resolver
	}
	return net.DefaultResolver
}

// CheckHost resolves host and refuses it when any address is internal
// (unless allowed). Used when an integration is saved, for a clear error.
func (p Policy) CheckHost(ctx context.Context, host string) error {
	if host == "" {
		return ErrTargetInvalid.WithDetail("no host")
	}
	if p.AllowPrivate {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if Internal(a) {
			return ErrPrivateTarget.New()
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := p.resolver().LookupNetIP(ctx, "ip", host)
	if err != nil {
		return ErrTargetInvalid.WithDetail("the host name %q does not resolve", truncate(host, 64))
	}
	for _, a := range addrs {
		if Internal(a) {
			return ErrPrivateTarget.New()
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// errRefused is what a dial to an internal address fails with.
var errRefused = errors.New("egress: connection to an internal address refused")

// IsRefused reports whether err is a dial the policy refused.
func IsRefused(err error) bool { return errors.Is(err, errRefused) }

// Dialer returns a dialer that checks the address actually connected to, so
// a name that resolves to a public address when saved and to an internal one
// later (DNS rebinding) is still refused.
func (p Policy) Dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Resolver: p.Resolver}
	if p.AllowPrivate {
		return d
	}
	d.Control = func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: %s", errRefused, address)
		}
		if Internal(ap.Addr()) {
			return errRefused
		}
		return nil
	}
	return d
}

// TLSOptions are an integration's TLS settings.
type TLSOptions struct {
	// CAPEM pins the CAs that verify the endpoint (empty: the system roots).
	CAPEM string
	// CertPEM and KeyPEM are a client certificate for mutual TLS.
	CertPEM, KeyPEM string
	// ServerName overrides the name verified (default: the dialled host).
	ServerName string
}

// TLSConfig builds a client TLS configuration: TLS 1.2 minimum, verified
// against the pinned CA or the system roots, optional client certificate.
func TLSConfig(o TLSOptions) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if o.CAPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(o.CAPEM)) {
			return nil, ErrTLSInvalid.WithDetail("caPem holds no certificate")
		}
		c.RootCAs = pool
	}
	if o.CertPEM != "" || o.KeyPEM != "" {
		cert, err := tls.X509KeyPair([]byte(o.CertPEM), []byte(o.KeyPEM))
		if err != nil {
			return nil, ErrTLSInvalid.WithDetail("the client certificate and key do not load as a pair")
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
