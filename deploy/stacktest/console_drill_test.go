//go:build stack

package stacktest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"time"

	"testing"
)

// console logs in to the stack's console with the operator's credentials
// (REHOME_NATS_URL of its secrets.env) and sees the six storage nodes
// through its JSON API; without the session the API answers 401.
func (s *stack) console(t *testing.T) {
	base := "http://127.0.0.1:" + getenv("REHOME_STACK_CONSOLE_PORT", "18080")
	var natsURL string
	for _, kv := range s.env {
		if v, ok := strings.CutPrefix(kv, "REHOME_NATS_URL="); ok {
			natsURL = v
		}
	}
	var user, pass string
	for _, p := range strings.Split(natsURL, ",") {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			user = u.User.Username()
			pass, _ = u.User.Password()
			break
		}
	}
	if user == "" {
		t.Fatalf("secrets.env: REHOME_NATS_URL carries no operator credentials")
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	if resp, err := plain.Get(base + "/api/state"); err != nil {
		t.Fatalf("the console at %s: %v", base, err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET /api/state without a session: %s, want 401", resp.Status)
		}
	}
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Timeout: 10 * time.Second, Jar: jar}
	resp, err := client.PostForm(base+"/login", url.Values{"user": {user}, "password": {pass}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK { // 303 to the page, followed
		t.Fatalf("login as %s: %s", user, resp.Status)
	}
	eventually(t, time.Minute, "the console shows 6 storage nodes", func() error {
		resp, err := client.Get(base + "/api/state")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var v struct {
			Bus    string `json:"bus"`
			Status *struct {
				Nodes []struct{ ID, State string } `json:"nodes"`
			} `json:"status"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return fmt.Errorf("GET /api/state: %s: %w", resp.Status, err)
		}
		if v.Status == nil || len(v.Status.Nodes) != 6 {
			return fmt.Errorf("bus %q, status %+v", v.Bus, v.Status)
		}
		return nil
	})
}
