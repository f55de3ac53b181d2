package embedded

import (
	"fmt"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rehome/rehome/shared/tlsconf"
)

// tlsTimeout bounds a client's TLS handshake, in seconds (the server's
// default of 2 s is tight for a busy machine starting many processes).
const tlsTimeout = 5

// applyTLS makes the server require TLS when cfg names a certificate and key,
// and client certificates signed by cfg.TLSClientCA when that is set too.
// Clients then need the CA (bus.Connect reads $REHOME_TLS_CA), and the
// server's ClientURL starts with tls://.
func (cfg Config) applyTLS(opts *server.Options) error {
	if cfg.TLSCert == "" && cfg.TLSKey == "" && cfg.TLSClientCA == "" {
		return nil
	}
	tc, err := tlsconf.Server(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA)
	if err != nil {
		return fmt.Errorf("embedded nats: %w", err)
	}
	opts.TLSConfig = tc
	opts.TLS = true
	opts.TLSVerify = cfg.TLSClientCA != ""
	opts.TLSTimeout = tlsTimeout
	return nil
}
