// Package kafkaauth tells the Kafka clients of this module (kafkapub,
// kafkasub) which connection errors are refused authentication: errors
// that connecting again with the same settings cannot cure, so that they
// fail at once instead of being retried until a context ends.
package kafkaauth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	kafkago "github.com/segmentio/kafka-go"
)

// Refused reports whether err, or an error it wraps, says that the cluster
// refused the client's SASL authentication (a wrong password or user, a
// mechanism the cluster does not offer) or that the client refused the
// cluster's TLS certificate (signed by an authority it does not trust,
// issued for another name, expired). Like Kafka's Java client, which does
// not retry an AuthenticationException, the module's clients treat these
// as permanent.
func Refused(err error) bool {
	if err == nil {
		return false
	}
	var (
		verify    *tls.CertificateVerificationError
		authority x509.UnknownAuthorityError
		host      x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	return errors.Is(err, kafkago.SASLAuthenticationFailed) || errors.Is(err, kafkago.UnsupportedSASLMechanism) ||
		errors.Is(err, kafkago.IllegalSASLState) ||
		errors.As(err, &verify) || errors.As(err, &authority) || errors.As(err, &host) || errors.As(err, &invalid)
}
