package storage

// serve serves the shard API on the bound listener until the server is shut
// down: HTTPS with Config.TLS when set (a plain-HTTP request then gets a 400),
// plain HTTP otherwise.
func (s *Service) serve() error {
	if s.srv.TLSConfig != nil {
		return s.srv.ServeTLS(s.ln, "", "")
	}
	return s.srv.Serve(s.ln)
}
