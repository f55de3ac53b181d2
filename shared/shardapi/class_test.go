package shardapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rehome/rehome/shared/shardapi"
)

// TestAsRepairMarksRequests checks that requests made with a context marked
// by AsRepair (or derived from one) carry the repair class, that others do
// not, and that the server side recognises both.
func TestAsRepairMarksRequests(t *testing.T) {
	var (
		mu      sync.Mutex
		classes []string
		repair  []bool
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		classes = append(classes, r.Header.Get(shardapi.HeaderClass))
		repair = append(repair, shardapi.IsRepair(r))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	c := shardapi.New("")

	type key struct{}
	rctx := context.WithValue(shardapi.AsRepair(context.Background()), key{}, 1)
	for _, ctx := range []context.Context{context.Background(), rctx} {
		if err := c.Delete(ctx, addr, "shard-1"); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(classes) != 2 || classes[0] != "" || classes[1] != shardapi.ClassRepair || repair[0] || !repair[1] {
		t.Fatalf("classes sent = %q, seen as repair = %v; want none then %q", classes, repair, shardapi.ClassRepair)
	}
}
