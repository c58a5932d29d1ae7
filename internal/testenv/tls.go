package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLS is a certificate authority made at run time for one test, with a
// server certificate it signed for 127.0.0.1, ::1 and localhost. Keys are
// ECDSA P-256 and live in memory; [TLS.WriteCA] and [TLS.WriteClientCert]
// write PEM files into the test's temporary directory for programs that
// read files. Certificates are valid from an hour ago to a day from now.
type TLS struct {
	// CA is the authority's certificate; Pool holds it alone.
	CA   *x509.Certificate
	Pool *x509.CertPool
	// Server is the server certificate (leaf and key). It is valid for
	// server and for client authentication, so that a server's own
	// helpers can present it under mutual TLS.
	Server tls.Certificate

	caKey *ecdsa.PrivateKey
}

// NewTLS makes a certificate authority and a server certificate for the
// test t.
func NewTLS(t testing.TB) *TLS {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "uuidforge test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testenv: CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testenv: CA certificate: %v", err)
	}
	c := &TLS{CA: ca, Pool: x509.NewCertPool(), caKey: key}
	c.Pool.AddCert(ca)
	c.Server = c.issue(t, "127.0.0.1", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	return c
}

// issue signs a certificate for name (also valid for localhost and the
// loopback addresses) with the given uses.
func (c *TLS) issue(t testing.TB, name string, uses ...x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  uses,
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.CA, &key.PublicKey, c.caKey)
	if err != nil {
		t.Fatalf("testenv: certificate for %s: %v", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testenv: certificate for %s: %v", name, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// ServerConfig is the configuration of a TLS server with c's server
// certificate, e.g. for kafkatest.WithTLS.
func (c *TLS) ServerConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.Server}, MinVersion: tls.VersionTLS12}
}

// MutualServerConfig is [TLS.ServerConfig] that also requires a client
// certificate signed by c (mutual TLS).
func (c *TLS) MutualServerConfig() *tls.Config {
	cfg := c.ServerConfig()
	cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, c.Pool
	return cfg
}

// ClientConfig is the configuration of a TLS client that trusts c (and
// nothing else).
func (c *TLS) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.Pool, MinVersion: tls.VersionTLS12}
}

// ClientCert returns a new client certificate named name, signed by c.
func (c *TLS) ClientCert(t testing.TB, name string) tls.Certificate {
	t.Helper()
	return c.issue(t, name, x509.ExtKeyUsageClientAuth)
}

// WriteCA writes c's CA certificate as PEM into a file in t's temporary
// directory and returns its path.
func (c *TLS) WriteCA(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	writePEM(t, p, "CERTIFICATE", c.CA.Raw)
	return p
}

// WriteClientCert writes a new client certificate named name, signed by
// c, and its key as PEM files into t's temporary directory (the key
// readable by its owner only) and returns their paths.
func (c *TLS) WriteClientCert(t testing.TB, name string) (certFile, keyFile string) {
	t.Helper()
	crt := c.ClientCert(t, name)
	der, err := x509.MarshalPKCS8PrivateKey(crt.PrivateKey)
	if err != nil {
		t.Fatalf("testenv: client key: %v", err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	writePEM(t, certFile, "CERTIFICATE", crt.Certificate[0])
	writePEM(t, keyFile, "PRIVATE KEY", der)
	return certFile, keyFile
}

func writePEM(t testing.TB, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testenv: serial number: %v", err)
	}
	return n
}
