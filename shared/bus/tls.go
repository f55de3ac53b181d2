package bus

import (
	"crypto/tls"

	"github.com/nats-io/nats.go"

	"github.com/rehome/rehome/shared/tlsconf"
)

// Option changes how Connect dials.
type Option func(*dialOptions)

type dialOptions struct {
	tls    *tls.Config
	tlsSet bool
}

// WithTLS makes Connect speak TLS with cfg (tlsconf.Client builds one),
// whatever the environment says. WithTLS(nil) dials without TLS of its own
// (a tls:// URL or a server requiring TLS still gets the system's roots).
func WithTLS(cfg *tls.Config) Option {
	return func(o *dialOptions) { o.tls, o.tlsSet = cfg, true }
}

// tlsOptions returns the NATS options that make a connection use TLS: the
// config given with WithTLS if any, else the one $REHOME_TLS_CA (with
// $REHOME_TLS_CERT and $REHOME_TLS_KEY for mTLS) describes, else none. A
// connection told to use TLS refuses a server that does not offer it.
func tlsOptions(opts []Option) ([]nats.Option, error) {
	var o dialOptions
	for _, opt := range opts {
		opt(&o)
	}
	cfg := o.tls
	if !o.tlsSet {
		var err error
		if cfg, err = tlsconf.ClientFromEnv(); err != nil {
			return nil, err
		}
	}
	if cfg == nil {
		return nil, nil
	}
	return []nats.Option{nats.Secure(cfg)}, nil
}
