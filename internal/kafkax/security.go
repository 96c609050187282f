package kafkax

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/txmsg/txmsg/internal/setting"
)

// The SASL mechanisms kafka.sasl.mechanism accepts.
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
)

// TLSConfig is the kafka.tls.* section: how connections to Kafka are
// encrypted.
type TLSConfig struct {
	// Enabled turns TLS on (default false). It is implied by the other
	// fields.
	Enabled bool `key:"kafka.tls.enabled" help:"connect to Kafka over TLS"`
	// CAFile is a PEM bundle of the CAs that sign the brokers' certificates;
	// empty trusts the system's CAs (default "").
	CAFile string `key:"kafka.tls.ca_file" help:"PEM file of the CAs that sign the brokers' certificates; empty trusts the system's"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// brokers that authenticate clients by certificate (default "").
	CertFile string `key:"kafka.tls.cert_file" help:"PEM client certificate, with kafka.tls.key_file, for brokers that require one"`
	KeyFile  string `key:"kafka.tls.key_file" help:"PEM key of kafka.tls.cert_file"`
	// InsecureSkipVerify accepts any broker certificate: for tests only
	// (default false).
	InsecureSkipVerify bool `key:"kafka.tls.insecure_skip_verify" help:"accept any broker certificate (tests only)"`
}

// SASLConfig is the kafka.sasl.* section: how clients authenticate to
// Kafka.
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty turns SASL
	// off (default "").
	Mechanism string `key:"kafka.sasl.mechanism" help:"SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty disables SASL"`
	// Username is the SASL user (default "").
	Username string `key:"kafka.sasl.username" help:"SASL user name"`
	// Password is the user's password; prefer PasswordFile or the
	// environment to a flag, which other users of the host can see
	// (default "").
	Password string `key:"kafka.sasl.password" help:"SASL password; prefer env TXMSG_KAFKA_SASL_PASSWORD or kafka.sasl.password_file"`
	// PasswordFile names a file holding the password, instead of Password;
	// a final newline is ignored (default "").
	PasswordFile string `key:"kafka.sasl.password_file" help:"file holding the SASL password, instead of kafka.sasl.password"`
}

// Security is how a client protects and authenticates its connections to
// Kafka; the zero value is plaintext without SASL.
type Security struct {
	// TLS, when set, encrypts every connection.
	TLS *tls.Config
	// SASL, when set, authenticates every connection.
	SASL sasl.Mechanism
}

// IsZero reports whether s is plaintext without SASL.
func (s Security) IsZero() bool { return s.TLS == nil && s.SASL == nil }

// enabled reports whether t asks for TLS.
func (t TLSConfig) enabled() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.InsecureSkipVerify
}

// validate checks t without reading its files.
func (t TLSConfig) validate(p *setting.Problems) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		if t.CertFile == "" {
			p.Add("kafka.tls.cert_file", t.CertFile, "required with kafka.tls.key_file")
		} else {
			p.Add("kafka.tls.key_file", t.KeyFile, "required with kafka.tls.cert_file")
		}
	}
}

// validate checks s without reading its files. Passwords never appear in
// a message.
func (s SASLConfig) validate(p *setting.Problems) {
	switch strings.ToUpper(s.Mechanism) {
	case "":
		if s.Username != "" || s.Password != "" || s.PasswordFile != "" {
			p.Add("kafka.sasl.mechanism", s.Mechanism, "required with kafka.sasl.username and password: want "+mechanisms())
		}
		return
	case MechanismPlain, MechanismScramSHA256, MechanismScramSHA512:
	default:
		p.Add("kafka.sasl.mechanism", s.Mechanism, "want one of "+mechanisms())
	}
	if s.Username == "" {
		p.Add("kafka.sasl.username", s.Username, "required with kafka.sasl.mechanism")
	}
	switch {
	case s.Password != "" && s.PasswordFile != "":
		p.Add("kafka.sasl.password_file", s.PasswordFile, "set kafka.sasl.password or kafka.sasl.password_file, not both")
	case s.Password == "" && s.PasswordFile == "":
		p.Add("kafka.sasl.password", "***", "required with kafka.sasl.mechanism (or kafka.sasl.password_file)")
	}
}

func mechanisms() string {
	return strings.Join([]string{MechanismPlain, MechanismScramSHA256, MechanismScramSHA512}, ", ")
}

// Security reads the files c names and builds the clients' Security. Its
// errors name the key and the file; the other checks are Validate's.
func (c Config) Security() (Security, error) {
	var p setting.Problems
	var s Security
	if c.TLS.enabled() {
		s.TLS = c.TLS.build(&p)
	}
	if c.SASL.Mechanism != "" {
		s.SASL = c.SASL.build(&p)
	}
	if err := p.Err(); err != nil {
		return Security{}, err
	}
	return s, nil
}

func (t TLSConfig) build(p *setting.Problems) *tls.Config {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			p.Add("kafka.tls.ca_file", t.CAFile, "want a readable PEM file: "+err.Error())
		} else {
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				p.Add("kafka.tls.ca_file", t.CAFile, "want a PEM file of certificates: none found")
			}
		}
	}
	if t.CertFile != "" && t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			p.Add("kafka.tls.cert_file", t.CertFile, "want a PEM certificate matching kafka.tls.key_file "+setting.Show(t.KeyFile)+": "+err.Error())
		} else {
			tc.Certificates = []tls.Certificate{cert}
		}
	}
	return tc
}

func (s SASLConfig) build(p *setting.Problems) sasl.Mechanism {
	pass := s.Password
	if s.PasswordFile != "" {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			p.Add("kafka.sasl.password_file", s.PasswordFile, "want a readable file: "+err.Error())
			return nil
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	m, err := NewMechanism(s.Mechanism, s.Username, pass)
	if err != nil {
		p.Add("kafka.sasl.mechanism", s.Mechanism, err.Error())
		return nil
	}
	return m
}

// NewMechanism returns the SASL mechanism named name (PLAIN, SCRAM-SHA-256 or
// SCRAM-SHA-512, case-insensitive) for user and password.
func NewMechanism(name, user, password string) (sasl.Mechanism, error) {
	switch strings.ToUpper(name) {
	case MechanismPlain:
		return plain.Mechanism{Username: user, Password: password}, nil
	case MechanismScramSHA256:
		return scram.Mechanism(scram.SHA256, user, password)
	case MechanismScramSHA512:
		return scram.Mechanism(scram.SHA512, user, password)
	default:
		return nil, fmt.Errorf("kafka: SASL mechanism %q: want one of %s", name, mechanisms())
	}
}

// NewTransport returns a Transport for Writers and Clients that uses s, or
// nil when s is the zero Security: kafka-go's shared DefaultTransport then
// serves. The caller owns the Transport: CloseIdleConnections stops it once
// every Writer and Client using it is closed.
func NewTransport(s Security) *kafka.Transport {
	if s.IsZero() {
		return nil
	}
	return &kafka.Transport{
		Dial: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLS:  s.TLS,
		SASL: s.SASL,
	}
}

// dialer returns a Dialer, for Readers and Ping, that uses s.
func (s Security) dialer(timeout time.Duration) *kafka.Dialer {
	return &kafka.Dialer{Timeout: timeout, DualStack: true, TLS: s.TLS, SASLMechanism: s.SASL}
}

// Ping connects to the brokers one by one, with s, until one accepts the
// connection (TLS handshake and SASL authentication included) and answers a
// Kafka request (ApiVersions: a port that is not Kafka's fails here), each
// within timeout. Its error names the brokers, and says "SASL
// authentication failed" when a broker refused the credentials.
func Ping(ctx context.Context, brokers []string, s Security, timeout time.Duration) error {
	d := s.dialer(timeout)
	// kafka-go's SASL handshake heeds neither ctx nor the Dialer's timeout:
	// against a port that accepts and never answers it would wait for ever.
	d.DialFunc = func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return &boundedConn{Conn: c, limit: time.Now().Add(timeout)}, nil
	}
	var errs []error
	for _, b := range brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(timeout))
			_, err = conn.ApiVersions()
			if cerr := conn.Close(); err == nil {
				return cerr
			}
			errs = append(errs, fmt.Errorf("%s did not answer a Kafka request: %w", b, err))
			continue
		}
		if isSASLFailure(err) {
			return fmt.Errorf("Kafka brokers %s: SASL authentication failed (mechanism %s): %w",
				strings.Join(brokers, ","), s.SASL.Name(), err)
		}
		errs = append(errs, err)
	}
	return &unreachableError{brokers: brokers, errs: errs}
}

// boundedConn is a connection no deadline set on it can take past limit.
type boundedConn struct {
	net.Conn
	limit time.Time
}

func (c *boundedConn) bound(t time.Time) time.Time {
	if t.IsZero() || t.After(c.limit) {
		return c.limit
	}
	return t
}

// SetDeadline implements net.Conn.
func (c *boundedConn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.bound(t)) }

// SetReadDeadline implements net.Conn.
func (c *boundedConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.bound(t)) }

// SetWriteDeadline implements net.Conn.
func (c *boundedConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.bound(t)) }

// unreachableError is Ping's error when no broker accepted a connection.
type unreachableError struct {
	brokers []string
	errs    []error
}

func (e *unreachableError) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return "Kafka brokers " + strings.Join(e.brokers, ",") + " unreachable: " + strings.Join(msgs, "; ")
}

func (e *unreachableError) Unwrap() []error { return e.errs }

// isSASLFailure reports whether err is a broker's refusal of the SASL
// exchange. kafka-go reports a broker that closes the connection during the
// exchange, as some do on a wrong password, as SASLAuthenticationFailed.
func isSASLFailure(err error) bool {
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return false
	}
	return ke == kafka.SASLAuthenticationFailed || ke == kafka.UnsupportedSASLMechanism || ke == kafka.IllegalSASLState
}

// NewClient returns a Client for admin requests (metadata, topic creation)
// to brokers through t, or kafka-go's DefaultTransport when t is nil.
func NewClient(brokers []string, t *kafka.Transport, timeout time.Duration) *kafka.Client {
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: timeout}
	if t != nil {
		cl.Transport = t
	}
	return cl
}
