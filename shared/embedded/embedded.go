// Package embedded runs a NATS server with JetStream inside the calling
// process: the bus of `rehome dev` and of integration tests.
package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config sets where the embedded server listens and stores its streams.
// Port -1 picks a free port.
type Config struct {
	Host     string
	Port     int
	StoreDir string
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
	s, err := server.NewServer(&server.Options{
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s:%d did not become ready (port in use?)", cfg.Host, cfg.Port)
	}
	return s, nil
}
