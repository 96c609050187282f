package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
)

// AddressPolicy says where check-backs may go, so that nobody who may
// register a check-back URL can make the broker call its internal
// neighbours. Always refused: link-local addresses (169.254.0.0/16 and
// fe80::/10, where cloud metadata services answer, and the metadata
// addresses outside them such as fd00:ec2::254), unspecified addresses
// (0.0.0.0/8, ::), multicast and broadcast. Loopback is refused unless
// AllowLoopback. A URL is checked when it is registered (its literal
// address, and for a producer group also the addresses its name resolves
// to) and again on every call, on the address actually dialed, so a name
// that resolves to a refused address later is refused too. The zero value
// is the default policy.
type AddressPolicy struct {
	// AllowLoopback lets check-backs reach 127.0.0.0/8 and ::1
	// (checkback.allow_loopback, default false): for development and
	// tests, where producers run on the broker's host.
	AllowLoopback bool `key:"checkback.allow_loopback" help:"true lets check-backs reach loopback addresses: development and tests"`
	// AllowHosts, when not empty, is the only hosts check-backs may reach
	// (checkback.allow_hosts, default none): host names (matched exactly,
	// case-insensitively, against the URL's host) and IP addresses or CIDR
	// prefixes (matched against every address dialed). The rules above
	// apply to allowed hosts too.
	AllowHosts []string `key:"checkback.allow_hosts" help:"the only hosts (names, IPs, CIDRs) check-backs may reach; empty: any but the refused ones"`
}

// addressRules is a validated AddressPolicy.
type addressRules struct {
	allowLoopback bool
	hosts         map[string]bool
	nets          []netip.Prefix
	restricted    bool
}

func (p AddressPolicy) rules() (*addressRules, error) {
	r := &addressRules{allowLoopback: p.AllowLoopback, hosts: map[string]bool{}, restricted: len(p.AllowHosts) > 0}
	for _, h := range p.AllowHosts {
		h = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
		if pfx, err := netip.ParsePrefix(h); err == nil {
			r.nets = append(r.nets, pfx.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(h); err == nil {
			r.nets = append(r.nets, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			continue
		}
		if !validHostName(h) {
			return nil, fmt.Errorf("broker: checkback.allow_hosts entry %q: want a host name, an IP address or a CIDR prefix", h)
		}
		r.hosts[h] = true
	}
	return r, nil
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// BlockedAddressError is why the address policy refused a check-back URL or
// a dial. It wraps txmsg.ErrInvalidMessage, so that a registration it
// refuses answers 400.
type BlockedAddressError struct {
	// Host is the URL's host.
	Host string
	// Addr is the refused address; invalid when the host name itself was
	// refused.
	Addr netip.Addr
	// Rule is the rule broken, for example "link-local address".
	Rule string
}

// Error implements error.
func (e *BlockedAddressError) Error() string {
	if !e.Addr.IsValid() || e.Addr.String() == e.Host {
		return fmt.Sprintf("checkback_url host %s refused: %s", e.Host, e.Rule)
	}
	return fmt.Sprintf("checkback_url host %s refused: it resolves to %s, a %s", e.Host, e.Addr, e.Rule)
}

// Unwrap returns txmsg.ErrInvalidMessage.
func (e *BlockedAddressError) Unwrap() error { return txmsg.ErrInvalidMessage }

// Rules broken, as BlockedAddressError.Rule says them.
const (
	ruleUnspecified = "unspecified address"
	ruleLinkLocal   = "link-local or cloud metadata address"
	ruleMulticast   = "multicast or broadcast address"
	ruleLoopback    = "loopback address (checkback.allow_loopback is false)"
	ruleNotAllowed  = "host not in checkback.allow_hosts"
)

// ipRule returns the rule that refuses ip whatever the allow-list, or "".
// An IPv6 address that carries an IPv4 one for a translator or tunnel
// (NAT64, 6to4, IPv4-compatible) is judged by the IPv4 address too: on a
// network that translates it, it reaches that address.
func (r *addressRules) ipRule(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	for _, v4 := range embeddedIPv4(ip) {
		if rule := r.ipRule(v4); rule != "" {
			return rule
		}
	}
	switch {
	case ip.IsUnspecified() || (ip.Is4() && ip.As4()[0] == 0):
		return ruleUnspecified
	case ip.IsLinkLocalUnicast() || isMetadata(ip):
		return ruleLinkLocal
	case ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return ruleMulticast
	case ip.IsLoopback() && !r.allowLoopback:
		return ruleLoopback
	}
	return ""
}

// The IPv6 prefixes whose addresses carry an IPv4 address: NAT64's
// well-known prefix (RFC 6052), in the last 32 bits; its local-use prefix
// (RFC 8215), in the last 32 bits or, in the /48 format, bits 48 to 88 less
// the u octet; 6to4 (RFC 3056), bits 16 to 48; IPv4-compatible addresses
// (deprecated), the last 32 bits.
var (
	nat64WellKnown = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local     = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour      = netip.MustParsePrefix("2002::/16")
	ipv4Compatible = netip.MustParsePrefix("::/96")
)

// embeddedIPv4 returns the IPv4 addresses an IPv6 address of those
// prefixes may carry.
func embeddedIPv4(ip netip.Addr) []netip.Addr {
	if !ip.Is6() {
		return nil
	}
	b := ip.As16()
	last := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	switch {
	case nat64WellKnown.Contains(ip), ipv4Compatible.Contains(ip) && !ip.IsUnspecified() && !ip.IsLoopback():
		return []netip.Addr{last}
	case nat64Local.Contains(ip):
		// Zeros where the other format keeps its address mean nothing.
		var out []netip.Addr
		for _, a := range []netip.Addr{last, netip.AddrFrom4([4]byte{b[6], b[7], b[9], b[10]})} {
			if a.As4()[0] != 0 {
				out = append(out, a)
			}
		}
		return out
	case sixToFour.Contains(ip):
		return []netip.Addr{netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})}
	}
	return nil
}

// isMetadata reports cloud metadata services outside the link-local ranges:
// AWS IMDS over IPv6 (fd00:ec2::254) and Alibaba Cloud's (100.100.100.200).
func isMetadata(ip netip.Addr) bool {
	return ip == netip.AddrFrom16([16]byte{0: 0xfd, 2: 0x0e, 3: 0xc2, 14: 0x02, 15: 0x54}) ||
		ip == netip.AddrFrom4([4]byte{100, 100, 100, 200})
}

// inNets reports whether the allow-list's prefixes hold ip.
func (r *addressRules) inNets(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	for _, p := range r.nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// hostAllowed reports whether the allow-list names host itself.
func (r *addressRules) hostAllowed(host string) bool {
	return !r.restricted || r.hosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// checkAddr checks one address that host resolved to (or is).
func (r *addressRules) checkAddr(host string, ip netip.Addr) error {
	if rule := r.ipRule(ip); rule != "" {
		return &BlockedAddressError{Host: host, Addr: ip.Unmap(), Rule: rule}
	}
	if !r.hostAllowed(host) && !r.inNets(ip) {
		return &BlockedAddressError{Host: host, Addr: ip.Unmap(), Rule: ruleNotAllowed}
	}
	return nil
}

// isLoopbackName reports names that resolve to loopback by definition
// (RFC 6761), so they are refused without asking DNS.
func isLoopbackName(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// checkURL validates a check-back URL at registration: its form, and its
// host without resolving it; the error wraps txmsg.ErrInvalidMessage and
// names the rule.
func (r *addressRules) checkURL(raw string) error {
	if err := halfmsg.ValidateCheckbackURL(raw); err != nil {
		return err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: checkback_url %q: %v", txmsg.ErrInvalidMessage, raw, err)
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		return r.checkAddr(host, ip)
	}
	if isLoopbackName(host) && !r.allowLoopback {
		return &BlockedAddressError{Host: host, Rule: ruleLoopback}
	}
	if !r.hostAllowed(host) && len(r.nets) == 0 {
		return &BlockedAddressError{Host: host, Rule: ruleNotAllowed}
	}
	return nil
}

// resolveTimeout bounds the DNS lookup of a group's URL at registration.
const resolveTimeout = 2 * time.Second

// checkResolved checks every address the URL's host resolves to now. A
// lookup that fails passes: DNS may not know a new service yet, and every
// call is checked again when it dials.
func (r *addressRules) checkResolved(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: checkback_url %q: %v", txmsg.ErrInvalidMessage, raw, err)
	}
	host := u.Hostname()
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(lctx, "ip", host)
	if err != nil {
		return nil
	}
	for _, ip := range ips {
		if err := r.checkAddr(host, ip); err != nil {
			return err
		}
	}
	return nil
}

// dialer dials check-back connections: it resolves the host itself, checks
// every address against the policy, and connects only to addresses that
// pass, so a name cannot be re-resolved to another address between check
// and connect. Its net.Dialer checks the address connected to once more.
type dialer struct {
	rules *addressRules
	net   net.Dialer
}

func newDialer(r *addressRules) *dialer {
	d := &dialer{rules: r}
	d.net = net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("broker: checkback: dial %s: not an IP address", address)
			}
			if rule := r.ipRule(ap.Addr()); rule != "" {
				return &BlockedAddressError{Host: ap.Addr().String(), Addr: ap.Addr().Unmap(), Rule: rule}
			}
			return nil
		}}
	return d
}

// DialContext implements http.Transport.DialContext.
func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		if ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
			return nil, err
		}
	}
	var errs []error
	for _, ip := range ips {
		if err := d.rules.checkAddr(host, ip); err != nil {
			errs = append(errs, err)
			continue
		}
		conn, err := d.net.DialContext(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("broker: checkback: %s resolves to no address", host)
	}
	return nil, errors.Join(errs...)
}

// newCheckbackClient returns the HTTP client check-backs go through: it
// dials through the policy, uses no proxy (a proxy would dial for it,
// unchecked), follows no redirect (the 3xx answer is the check's result),
// and keeps up to concurrency idle connections per producer.
func newCheckbackClient(r *addressRules, concurrency int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = newDialer(r).DialContext
	tr.MaxIdleConnsPerHost = concurrency
	// The total must not cap the per-host limit: a connection closed for
	// want of an idle slot is a new dial (and TLS handshake) per check.
	tr.MaxIdleConns = max(tr.MaxIdleConns, concurrency)
	tr.MaxResponseHeaderBytes = 64 << 10
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
