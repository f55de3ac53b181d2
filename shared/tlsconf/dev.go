package tlsconf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Validity of development certificates, and how much of it must remain for
// EnsureDev to reuse them.
const (
	DevValidity = 365 * 24 * time.Hour
	devMinLeft  = 7 * 24 * time.Hour
)

// DevHosts are the names every development server certificate covers.
var DevHosts = []string{"127.0.0.1", "::1", "localhost"}

// Dev names the files of a development PKI in one directory: a CA (its key is
// discarded once it has signed), a server certificate and a client
// certificate, all PEM. Keys are readable by their owner only.
type Dev struct {
	CA         string // ca.pem
	ServerCert string // server.pem: serverAuth, for DevHosts and the hosts asked for
	ServerKey  string // server-key.pem
	ClientCert string // client.pem: clientAuth, CN rehome-client
	ClientKey  string // client-key.pem
}

// DevFiles returns the file names of the development PKI in dir.
func DevFiles(dir string) Dev {
	return Dev{
		CA:         filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client-key.pem"),
	}
}

// Client returns the client side's files: the CA, and the client certificate
// when withCert (for servers that require one).
func (d Dev) Client(withCert bool) Files {
	f := Files{CA: d.CA}
	if withCert {
		f.Cert, f.Key = d.ClientCert, d.ClientKey
	}
	return f
}

// GenerateDev writes a new development PKI into dir (created with mode 0700
// if missing), replacing any there: a CA, a server certificate for DevHosts
// and hosts (IP addresses or DNS names), and a client certificate, valid for
// DevValidity. Each file is written atomically; keys get mode 0600.
func GenerateDev(dir string, hosts ...string) (Dev, error) {
	d := DevFiles(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return d, fmt.Errorf("tls: dev dir: %w", err)
	}
	now := time.Now()
	caKey, err := newKey()
	if err != nil {
		return d, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "rehome dev CA", Organization: []string{"rehome"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(DevValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, ca, err := sign(caTmpl, nil, caKey, caKey)
	if err != nil {
		return d, err
	}
	srvTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "rehome dev server", Organization: []string{"rehome"}},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(DevValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hostList(hosts) {
		if ip := net.ParseIP(h); ip != nil {
			srvTmpl.IPAddresses = append(srvTmpl.IPAddresses, ip)
		} else {
			srvTmpl.DNSNames = append(srvTmpl.DNSNames, h)
		}
	}
	cliTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "rehome-client", Organization: []string{"rehome"}},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(DevValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := writePEM(d.CA, 0o644, "CERTIFICATE", caDER); err != nil {
		return d, err
	}
	for _, leaf := range []struct {
		tmpl      *x509.Certificate
		cert, key string
	}{{srvTmpl, d.ServerCert, d.ServerKey}, {cliTmpl, d.ClientCert, d.ClientKey}} {
		key, err := newKey()
		if err != nil {
			return d, err
		}
		der, _, err := sign(leaf.tmpl, ca, key, caKey)
		if err != nil {
			return d, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return d, fmt.Errorf("tls: encode key: %w", err)
		}
		if err := writePEM(leaf.key, 0o600, "PRIVATE KEY", keyDER); err != nil {
			return d, err
		}
		if err := writePEM(leaf.cert, 0o644, "CERTIFICATE", der); err != nil {
			return d, err
		}
	}
	return d, nil
}

// EnsureDev returns the development PKI in dir, reusing it when it loads,
// both certificates chain to its CA, the server certificate covers DevHosts
// and hosts, and a week of validity remains; otherwise it generates a new one
// (GenerateDev). reused reports which happened.
func EnsureDev(dir string, hosts ...string) (d Dev, reused bool, err error) {
	d = DevFiles(dir)
	if checkDev(d, hostList(hosts), time.Now()) == nil {
		return d, true, nil
	}
	d, err = GenerateDev(dir, hosts...)
	return d, false, err
}

// checkDev reports why the PKI d cannot be reused at now for hosts, or nil.
func checkDev(d Dev, hosts []string, now time.Time) error {
	pool, err := loadPool(d.CA)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		cert, key string
		usage     x509.ExtKeyUsage
		hosts     []string
	}{{d.ServerCert, d.ServerKey, x509.ExtKeyUsageServerAuth, hosts}, {d.ClientCert, d.ClientKey, x509.ExtKeyUsageClientAuth, nil}} {
		pair, err := loadPair(c.cert, c.key)
		if err != nil {
			return err
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return fmt.Errorf("tls: %s: %w", c.cert, err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now.Add(devMinLeft), KeyUsages: []x509.ExtKeyUsage{c.usage}}); err != nil {
			return fmt.Errorf("tls: %s: %w", c.cert, err)
		}
		for _, h := range c.hosts {
			if err := leaf.VerifyHostname(h); err != nil {
				return fmt.Errorf("tls: %s: %w", c.cert, err)
			}
		}
	}
	return nil
}

// hostList is DevHosts followed by the other hosts, without duplicates or
// empty names.
func hostList(hosts []string) []string {
	out := slices.Clone(DevHosts)
	for _, h := range hosts {
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tls: generate key: %w", err)
	}
	return k, nil
}

// sign issues tmpl for key's public half, signed by parent's key (tmpl itself
// when parent is nil: self-signed), with a random serial number.
func sign(tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, parentKey crypto.Signer) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("tls: serial: %w", err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: sign %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: parse %s: %w", tmpl.Subject.CommonName, err)
	}
	return der, cert, nil
}

// writePEM writes one PEM block to path atomically (temp file, fsync, rename)
// with mode perm.
func writePEM(path string, perm os.FileMode, typ string, der []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	err = errors.Join(f.Chmod(perm), pem.Encode(f, &pem.Block{Type: typ, Bytes: der}), f.Sync())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	return nil
}
