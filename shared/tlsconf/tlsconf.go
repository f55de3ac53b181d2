// Package tlsconf builds rehome's TLS configurations from PEM files: the
// client side (trust one CA, optionally present a certificate: mTLS) of the
// bus and the storage API, their server side, and a development CA with a
// server and a client certificate for `rehome dev --tls`.
//
// The environment names the client side's files: $REHOME_TLS_CA (the CA the
// bus and the storage nodes' certificates chain to; setting it turns TLS on),
// $REHOME_TLS_CERT and $REHOME_TLS_KEY (this process's certificate and key,
// presented when a server asks for one; `rehome storage` also serves them
// when no --tls-cert is given).
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Environment variable names.
const (
	EnvCA   = "REHOME_TLS_CA"
	EnvCert = "REHOME_TLS_CERT"
	EnvKey  = "REHOME_TLS_KEY"
)

// handshakeMin is the lowest TLS version either side speaks.
const handshakeMin = tls.VersionTLS12

// Files names the PEM files of one side of a connection.
type Files struct {
	CA   string // CA certificate(s) a peer's certificate must chain to
	Cert string // own certificate (leaf first, then intermediates)
	Key  string // private key of Cert
}

// FromEnv returns the files named by $REHOME_TLS_CA, $REHOME_TLS_CERT and
// $REHOME_TLS_KEY (empty names where unset).
func FromEnv() Files {
	return Files{CA: os.Getenv(EnvCA), Cert: os.Getenv(EnvCert), Key: os.Getenv(EnvKey)}
}

// Env returns f as KEY=value environment entries, leaving out empty names:
// what a child process needs for ClientFromEnv to see f.
func (f Files) Env() []string {
	var env []string
	for _, kv := range [][2]string{{EnvCA, f.CA}, {EnvCert, f.Cert}, {EnvKey, f.Key}} {
		if kv[1] != "" {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	return env
}

// Client returns the configuration of a client that trusts only the CA in
// f.CA (required) and presents f.Cert with f.Key when both are set (for a
// server that requires client certificates). The server's name is checked
// against its certificate as usual (the dialler fills ServerName in).
func Client(f Files) (*tls.Config, error) {
	if f.CA == "" {
		return nil, errors.New("tls: a CA file is required (" + EnvCA + ")")
	}
	pool, err := loadPool(f.CA)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: handshakeMin, RootCAs: pool}
	if f.Cert != "" || f.Key != "" {
		cert, err := loadPair(f.Cert, f.Key)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// ClientFromEnv returns Client(FromEnv()), or nil and no error when
// $REHOME_TLS_CA is unset (plain connections).
func ClientFromEnv() (*tls.Config, error) {
	f := FromEnv()
	if f.CA == "" {
		return nil, nil
	}
	return Client(f)
}

// Server returns the configuration of a server presenting cert with key. With
// clientCA set it also requires every client to present a certificate that
// chains to that CA (mTLS); without, it asks for none.
func Server(cert, key, clientCA string) (*tls.Config, error) {
	pair, err := loadPair(cert, key)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: handshakeMin, Certificates: []tls.Certificate{pair}}
	if clientCA != "" {
		pool, err := loadPool(clientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// loadPool reads the PEM certificates in path into a pool.
func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: CA %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// loadPair reads a certificate and its key, both required.
func loadPair(cert, key string) (tls.Certificate, error) {
	if cert == "" || key == "" {
		return tls.Certificate{}, fmt.Errorf("tls: a certificate and its key go together (got cert %q, key %q)", cert, key)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: certificate %s with key %s: %w", cert, key, err)
	}
	return pair, nil
}
