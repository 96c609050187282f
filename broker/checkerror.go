package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/txmsg/txmsg/checkback"
)

var (
	// errNoURL: neither the message nor its group has a check-back URL.
	errNoURL = errors.New("broker: checkback: no check-back URL")
	// errNotAsked: the check was past the message's max checks.
	errNotAsked = errors.New("broker: checkback: not asked")
)

// checkErrorClass is what the store records of a failed check: a short
// classification, never text the producer's host sent, so that the API
// cannot be used to read internal services through the broker.
func checkErrorClass(err error) string {
	var (
		blocked *BlockedAddressError
		status  *checkback.StatusError
		netErr  net.Error
		dnsErr  *net.DNSError
		recErr  tls.RecordHeaderError
		certErr *tls.CertificateVerificationError
		unkAuth x509.UnknownAuthorityError
		host    x509.HostnameError
	)
	switch {
	case errors.Is(err, errNoURL):
		return "no_url"
	case errors.Is(err, errNotAsked):
		return "not_asked"
	case errors.As(err, &blocked):
		return "blocked: " + blocked.Rule
	case errors.As(err, &status):
		return fmt.Sprintf("http_status %d", status.Status)
	case errors.Is(err, checkback.ErrBadAnswer):
		return "bad_answer"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &dnsErr):
		return "dns"
	case errors.As(err, &recErr), errors.As(err, &certErr), errors.As(err, &unkAuth), errors.As(err, &host):
		return "tls"
	}
	return "connection"
}
