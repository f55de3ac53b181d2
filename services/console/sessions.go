package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"sync"
	"time"
)

// maxSessions bounds the logins kept at once; the oldest goes first.
const maxSessions = 1024

// sessions holds the logged-in browsers: random tokens in memory, each
// expiring ttl after its login. A restarted console forgets them all.
type sessions struct {
	mu   sync.Mutex
	ttl  time.Duration
	now  func() time.Time
	live map[string]time.Time // token -> expiry
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{ttl: ttl, now: now, live: map[string]time.Time{}}
}

// create returns a new session token.
func (s *sessions) create() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var oldest string
	for t, exp := range s.live {
		if !exp.After(now) {
			delete(s.live, t)
		} else if oldest == "" || exp.Before(s.live[oldest]) {
			oldest = t
		}
	}
	if len(s.live) >= maxSessions {
		delete(s.live, oldest)
	}
	s.live[tok] = now.Add(s.ttl)
	return tok, nil
}

// valid reports whether tok is a live session.
func (s *sessions) valid(tok string) bool {
	if tok == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.live[tok]
	if ok && !exp.After(s.now()) {
		delete(s.live, tok)
		return false
	}
	return ok
}

// end forgets tok.
func (s *sessions) end(tok string) {
	s.mu.Lock()
	delete(s.live, tok)
	s.mu.Unlock()
}

// sameSecret compares a and b in time independent of where they differ.
func sameSecret(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
