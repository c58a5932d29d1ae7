package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// kafkaSecurityFlags are the flags of TLS and SASL for Kafka, in the order
// the usage text gives them.
var kafkaSecurityFlags = []string{"kafka-tls", "kafka-ca", "kafka-cert", "kafka-key", "kafka-sasl", "kafka-user"}

// kafkaSecurity returns the first Kafka TLS or SASL flag given, "" when
// none is.
func (f *dlqFlags) kafkaSecurity() string {
	for _, n := range kafkaSecurityFlags {
		if f.given[n] {
			return n
		}
	}
	return ""
}

// checkKafkaSecurity checks that the Kafka TLS and SASL flags go together.
func (f *dlqFlags) checkKafkaSecurity() error {
	switch {
	case f.given["kafka-ca"] && f.kafkaCA == "":
		return errorf("%w: --kafka-ca: empty file name", errUsage)
	case f.given["kafka-cert"] && f.kafkaCert == "", f.given["kafka-key"] && f.kafkaKey == "":
		return errorf("%w: --kafka-cert and --kafka-key: empty file name", errUsage)
	case f.given["kafka-cert"] != f.given["kafka-key"]:
		return errorf("%w: --kafka-cert and --kafka-key go together (the client certificate and its key)", errUsage)
	case f.given["kafka-tls"] && !f.kafkaTLS && (f.given["kafka-ca"] || f.given["kafka-cert"]):
		return errorf("%w: --kafka-tls=false: --kafka-ca and --kafka-cert need TLS", errUsage)
	case f.given["kafka-user"] && !f.given["kafka-sasl"]:
		return errorf("%w: --kafka-user is the SASL user: give --kafka-sasl too", errUsage)
	case !f.given["kafka-sasl"]:
		return nil
	case saslMechanism(f.kafkaSASL) == "":
		return errorf("%w: --kafka-sasl %q: want plain, scram-sha-256 or scram-sha-512", errUsage, f.kafkaSASL)
	case f.kafkaUser == "":
		return errorf("%w: --kafka-sasl needs --kafka-user NAME (and the password in $%s)", errUsage, envKafkaPassword)
	}
	return nil
}

// saslMechanism returns the name of SASL mechanism s in Kafka's spelling,
// "" for one forge does not know.
func saslMechanism(s string) string {
	for _, m := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		if strings.EqualFold(s, m) {
			return m
		}
	}
	return ""
}

// kafkaSecurity is what the Kafka transport needs of the flags.
type kafkaSecurity struct {
	tls  *tls.Config
	sasl sasl.Mechanism
}

// kafkaTransport reads the files and the password the Kafka TLS and SASL
// flags name. The password is added to the secrets no output shows.
func (f *dlqFlags) kafkaTransport(getenv func(string) string) (kafkaSecurity, error) {
	var sec kafkaSecurity
	if f.kafkaTLS || f.kafkaCA != "" || f.kafkaCert != "" {
		sec.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if f.kafkaCA != "" {
		pem, err := os.ReadFile(f.kafkaCA)
		if err != nil {
			return sec, errorf("--kafka-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return sec, errorf("--kafka-ca %s: no PEM certificate in the file", f.kafkaCA)
		}
		sec.tls.RootCAs = pool
	}
	if f.kafkaCert != "" {
		crt, err := tls.LoadX509KeyPair(f.kafkaCert, f.kafkaKey)
		if err != nil {
			// The error names the files and what is wrong, never the key.
			return sec, errorf("--kafka-cert %s --kafka-key %s: %w", f.kafkaCert, f.kafkaKey, err)
		}
		sec.tls.Certificates = []tls.Certificate{crt}
	}
	if f.kafkaSASL == "" {
		return sec, nil
	}
	password := getenv(envKafkaPassword)
	if password == "" {
		return sec, errorf("%w: --kafka-sasl: set the password in $%s (there is no flag for it: flags show in ps)", errUsage, envKafkaPassword)
	}
	f.secrets = append(f.secrets, password)
	switch m := saslMechanism(f.kafkaSASL); m {
	case "PLAIN":
		sec.sasl = plain.Mechanism{Username: f.kafkaUser, Password: password}
	default:
		algo := scram.SHA256
		if m == "SCRAM-SHA-512" {
			algo = scram.SHA512
		}
		mech, err := scram.Mechanism(algo, f.kafkaUser, password)
		if err != nil {
			// The SCRAM client's error quotes the password.
			return sec, errors.New("--kafka-sasl " + f.kafkaSASL + ": the user name or the password in $" + envKafkaPassword +
				" is not valid for SCRAM (SASLprep refused it)")
		}
		sec.sasl = mech
	}
	return sec, nil
}

// transport returns a kafka-go transport with these settings.
func (s kafkaSecurity) transport() *kafkago.Transport {
	return &kafkago.Transport{ClientID: "forge-dlq", TLS: s.tls, SASL: s.sasl}
}

// hint says which settings a broker that closes the connection at once
// may want.
func (s kafkaSecurity) hint() string {
	switch {
	case s.tls == nil && s.sasl == nil:
		return "does the cluster require TLS (--kafka-tls, --kafka-ca) or SASL (--kafka-sasl)?"
	case s.sasl == nil:
		return "does the cluster require SASL (--kafka-sasl) or a client certificate (--kafka-cert)?"
	case s.tls == nil:
		return "does the cluster require TLS (--kafka-tls, --kafka-ca)?"
	}
	return "does the cluster require a client certificate (--kafka-cert), or another SASL mechanism?"
}
