package main

import (
	"crypto/tls"
	"errors"
	"net/http"
	"os"

	"github.com/spf13/cobra"

	"github.com/rehome/rehome/shared/tlsconf"
)

// serverTLSFlags are the HTTPS flags of `rehome storage`.
type serverTLSFlags struct {
	cert, key, clientCA string
}

func (f *serverTLSFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.cert, "tls-cert", "", "serve HTTPS with this PEM certificate (default $"+tlsconf.EnvCert+")")
	fl.StringVar(&f.key, "tls-key", "", "PEM private key of --tls-cert (default $"+tlsconf.EnvKey+")")
	fl.StringVar(&f.clientCA, "tls-client-ca", "", "also require client certificates signed by this PEM CA (mTLS, on top of the token)")
}

// config returns the server configuration the flags describe, falling back
// to $REHOME_TLS_CERT and $REHOME_TLS_KEY when neither --tls-cert nor
// --tls-key is given; nil (plain HTTP) when no certificate is named. Read it
// in RunE: --env-file has been loaded by then.
func (f serverTLSFlags) config() (*tls.Config, error) {
	cert, key := f.cert, f.key
	if cert == "" && key == "" {
		cert, key = os.Getenv(tlsconf.EnvCert), os.Getenv(tlsconf.EnvKey)
	}
	if cert == "" && key == "" {
		if f.clientCA != "" {
			return nil, errors.New("--tls-client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	return tlsconf.Server(cert, key, f.clientCA)
}

// healthClient is the healthcheck's HTTP client: for an https URL it trusts
// $REHOME_TLS_CA (and presents $REHOME_TLS_CERT) when that is set.
func healthClient() (*http.Client, error) {
	cfg, err := tlsconf.ClientFromEnv()
	if err != nil || cfg == nil {
		return http.DefaultClient, err
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}, nil
}
