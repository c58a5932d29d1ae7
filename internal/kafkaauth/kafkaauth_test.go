package kafkaauth_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"testing"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/internal/kafkaauth"
)

func TestRefused(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("kafkapub: ping: %w", fmt.Errorf("dial: %w", err)) }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"SASL failed", wrap(kafkago.SASLAuthenticationFailed), true},
		{"SASL failed with message", wrap(fmt.Errorf("%w: invalid credentials", kafkago.SASLAuthenticationFailed)), true},
		{"unsupported mechanism", wrap(kafkago.UnsupportedSASLMechanism), true},
		{"unknown authority", wrap(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), true},
		{"bare unknown authority", wrap(x509.UnknownAuthorityError{}), true},
		{"host name", wrap(x509.HostnameError{Host: "kafka"}), true},
		{"expired", wrap(x509.CertificateInvalidError{Reason: x509.Expired}), true},
		{"EOF", wrap(io.ErrUnexpectedEOF), false},
		{"leader moved", wrap(kafkago.NotLeaderForPartition), false},
		{"topic not authorized", wrap(kafkago.TopicAuthorizationFailed), false},
		{"other", wrap(errors.New("connection refused")), false},
	} {
		if got := kafkaauth.Refused(tc.err); got != tc.want {
			t.Errorf("%s: Refused = %v, want %v", tc.name, got, tc.want)
		}
	}
}
