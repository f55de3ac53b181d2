package shardapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rehome/rehome/shared/shardapi"
)

// TestAsRepairMarksRequests checks that requests made with a context marked
// by AsRepair (or derived from one) carry the repair class, with WithClass
// the background class, that others do not, and that the server side
// recognises each.
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
	bctx := shardapi.WithClass(context.Background(), shardapi.ClassBackground)
	odd := shardapi.WithClass(context.Background(), "urgent") // marks nothing
	for _, ctx := range []context.Context{context.Background(), rctx, bctx, odd} {
		if err := c.Delete(ctx, addr, "shard-1"); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"", shardapi.ClassRepair, shardapi.ClassBackground, ""}
	if len(classes) != 4 || !slices.Equal(classes, want) || !slices.Equal(repair, []bool{false, true, true, false}) {
		t.Fatalf("classes sent = %q, seen as repair = %v; want %q, the middle two not foreground", classes, repair, want)
	}
}
