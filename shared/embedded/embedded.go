// Package embedded runs a NATS server with JetStream inside the calling
// process: the bus of `rehome dev` and of integration tests.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rehome/rehome/shared/access"
)

// Config sets where the embedded server listens and stores its streams.
// Port -1 picks a free port.
//
// SystemUser and SystemPassword (both or neither) add a system account: the
// server then has two accounts, AppAccount (JetStream enabled, where every
// client connecting without credentials lands, as before) and SystemAccount
// (the server's own events, e.g. $SYS.ACCOUNT.*.DISCONNECT), reachable only
// with those credentials (see SystemURL). Without them the server has the
// single default account, as before.
//
// Users (non-empty) turns authentication on: only those users (and the
// system user) may connect, each with its role's permissions
// (access.ServerConf); a client without credentials is refused.
type Config struct {
	Host           string
	Port           int
	StoreDir       string
	SystemUser     string
	SystemPassword string
	Users          []access.User

	// TLSCert and TLSKey (PEM files, both or neither) make the server
	// require TLS; TLSClientCA also requires client certificates signed by
	// that CA (mTLS). See applyTLS.
	TLSCert, TLSKey, TLSClientCA string
}

// Account names used when Config has a system user.
const (
	AppAccount    = access.AppAccount
	SystemAccount = access.SystemAccount
	// anonUser is the user clients without credentials are mapped to.
	anonUser = "rehome"
)

// accountsConf declares the two accounts; JetStream limits of an account can
// only be set through the configuration parser, so the accounts come from it
// while the users are added in code (no escaping of passwords needed).
const accountsConf = `accounts: { ` + AppAccount + `: { jetstream: enabled }, ` + SystemAccount + `: {} }`

// SystemURL returns clientURL (e.g. s.ClientURL()) with the system user's
// credentials in it, for a connection to the system account. It returns
// clientURL unchanged when c has no system user.
func (c Config) SystemURL(clientURL string) string {
	if c.SystemUser == "" {
		return clientURL
	}
	u, err := url.Parse(clientURL)
	if err != nil {
		return clientURL
	}
	u.User = url.UserPassword(c.SystemUser, c.SystemPassword)
	return u.String()
}

// options builds the server options for cfg (Host already defaulted).
func options(cfg Config) (*server.Options, error) {
	opts := &server.Options{}
	if len(cfg.Users) > 0 {
		conf, err := access.ServerConf(cfg.Users, access.System{Name: cfg.SystemUser, Password: cfg.SystemPassword})
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		if err := opts.ProcessConfigString(conf); err != nil {
			return nil, fmt.Errorf("embedded nats: users: %w", err)
		}
	} else if cfg.SystemUser != "" || cfg.SystemPassword != "" {
		if cfg.SystemUser == "" || cfg.SystemPassword == "" {
			return nil, errors.New("embedded nats: system user and password go together")
		}
		if cfg.SystemUser == anonUser {
			return nil, fmt.Errorf("embedded nats: system user may not be %q", anonUser)
		}
		if err := opts.ProcessConfigString(accountsConf); err != nil {
			return nil, fmt.Errorf("embedded nats: accounts: %w", err)
		}
		accs := map[string]*server.Account{}
		for _, a := range opts.Accounts {
			accs[a.Name] = a
		}
		app, sys := accs[AppAccount], accs[SystemAccount]
		if app == nil || sys == nil {
			return nil, errors.New("embedded nats: accounts not configured")
		}
		opts.Users = []*server.User{
			{Username: anonUser, Account: app},
			{Username: cfg.SystemUser, Password: cfg.SystemPassword, Account: sys},
		}
		opts.NoAuthUser = anonUser
		opts.SystemAccount = SystemAccount
	}
	opts.Host = cfg.Host
	opts.Port = cfg.Port
	opts.JetStream = true
	opts.StoreDir = cfg.StoreDir
	opts.NoSigs = true
	opts.NoLog = true
	opts.MaxPayload = 8 << 20
	if err := cfg.applyTLS(opts); err != nil {
		return nil, err
	}
	return opts, nil
}

// Start launches the server and blocks until it accepts connections (at most
// 10 s). The caller owns it: Shutdown then WaitForShutdown.
func Start(cfg Config) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded nats: a store dir is required")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	opts, err := options(cfg)
	if err != nil {
		return nil, err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s did not become ready (port in use?)", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	}
	return s, nil
}
