package devcluster

import (
	"crypto/tls"
	"fmt"
	"path/filepath"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/embedded"
	"github.com/rehome/rehome/shared/tlsconf"
)

// tlsDir holds the development PKI of `rehome dev --tls`, under Config.Dir:
// ca.pem, server.pem and server-key.pem (the NATS server and every storage
// node), client.pem and client-key.pem (presented with --mtls).
const tlsDir = "tls"

// devTLS is the TLS setup of a cluster run with Config.TLS or Config.MTLS.
type devTLS struct {
	pki    tlsconf.Dev
	mtls   bool
	client *tls.Config // the supervisor's own bus connections
}

// setupTLS returns nil when cfg asks for no TLS. Otherwise it makes sure the
// development PKI exists in <dir>/tls (reusing the one an earlier run wrote,
// so nodes restarted by hand and shells equipped from secrets.env keep
// working), and makes ncfg require TLS, and client certificates with MTLS.
func setupTLS(cfg Config, ncfg *embedded.Config) (*devTLS, error) {
	if !cfg.TLS && !cfg.MTLS {
		return nil, nil
	}
	pki, _, err := tlsconf.EnsureDev(filepath.Join(cfg.Dir, tlsDir))
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	t := &devTLS{pki: pki, mtls: cfg.MTLS}
	if t.client, err = tlsconf.Client(t.files()); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	ncfg.TLSCert, ncfg.TLSKey = pki.ServerCert, pki.ServerKey
	if t.mtls {
		ncfg.TLSClientCA = pki.CA
	}
	return t, nil
}

// files are the client side's files: the CA, and the client certificate
// with MTLS.
func (t *devTLS) files() tlsconf.Files { return t.pki.Client(t.mtls) }

// useTLS records t (nil: no TLS) and puts the client side's files into every
// child's environment.
func (c *Cluster) useTLS(t *devTLS) {
	c.tls = t
	c.withTLSEnv(c.childEnv)
}

// withTLSEnv adds $REHOME_TLS_CA (and, with MTLS, $REHOME_TLS_CERT and
// $REHOME_TLS_KEY) to kv when TLS is on, and returns kv.
func (c *Cluster) withTLSEnv(kv map[string]string) map[string]string {
	if c.tls == nil {
		return kv
	}
	f := c.tls.files()
	for k, v := range map[string]string{tlsconf.EnvCA: f.CA, tlsconf.EnvCert: f.Cert, tlsconf.EnvKey: f.Key} {
		if v != "" {
			kv[k] = v
		}
	}
	return kv
}

// busOpts are the options of the supervisor's own bus connections.
func (c *Cluster) busOpts() []bus.Option {
	if c.tls == nil {
		return nil
	}
	return []bus.Option{bus.WithTLS(c.tls.client)}
}

// storageTLSArgs are the flags that make a storage node serve HTTPS with the
// server certificate (and, with MTLS, require client certificates).
func (c *Cluster) storageTLSArgs() []string {
	if c.tls == nil {
		return nil
	}
	args := []string{"--tls-cert", c.tls.pki.ServerCert, "--tls-key", c.tls.pki.ServerKey}
	if c.tls.mtls {
		args = append(args, "--tls-client-ca", c.tls.pki.CA)
	}
	return args
}

// storageScheme is the URL scheme of the storage nodes' API.
func (c *Cluster) storageScheme() string {
	if c.tls == nil {
		return "http"
	}
	return "https"
}
