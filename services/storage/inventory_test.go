package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/model"
)

func TestParseInventoryRequest(t *testing.T) {
	cases := []struct {
		body  string
		after string
		limit int
		bad   bool
	}{
		{"", "", control.MaxInventoryPage, false},
		{"{}", "", control.MaxInventoryPage, false},
		{"null", "", control.MaxInventoryPage, false},
		{`{"limit":10}`, "", 10, false},
		{`{"limit":1000000}`, "", control.MaxInventoryPage, false},
		{`{"after":"obj-1","limit":3}`, "obj-1", 3, false},
		{`{"after":"obj-1","extra":true}`, "obj-1", control.MaxInventoryPage, false},
		{`{"limit":-1}`, "", 0, true},
		{`{"limit":1.5}`, "", 0, true},
		{`{"after":"../x"}`, "", 0, true},
		{`{"after":"` + strings.Repeat("a", 129) + `"}`, "", 0, true},
		{`{"after":7}`, "", 0, true},
		{"[]", "", 0, true},
		{"\x00\xff", "", 0, true},
	}
	for _, c := range cases {
		req, err := parseInventoryRequest([]byte(c.body))
		if c.bad {
			if !errors.Is(err, model.ErrInvalid) {
				t.Errorf("%q: %v, want ErrInvalid", c.body, err)
			}
			continue
		}
		if err != nil || req.After != c.after || req.Limit != c.limit {
			t.Errorf("%q = %+v, %v; want after %q limit %d", c.body, req, err, c.after, c.limit)
		}
	}
}

// listPager pages a fixed sorted list.
type listPager []disk.Info

func (l listPager) Page(after string, limit int) ([]disk.Info, bool) {
	i, _ := slices.BinarySearchFunc(l, after, func(s disk.Info, id string) int { return strings.Compare(s.ID, id) })
	if i < len(l) && l[i].ID == after {
		i++
	}
	end := min(i+limit, len(l))
	return l[i:end], end < len(l)
}

func TestInventoryReplyShrinksPagesToTheBusLimit(t *testing.T) {
	var shards listPager
	for i := range 300 {
		shards = append(shards, disk.Info{ID: fmt.Sprintf("shard-%04d", i), Size: int64(i), SHA256: strings.Repeat("ab", 32)})
	}
	const maxPayload = 4096 // about 30 entries
	var got []string
	after, pages := "", 0
	for ; pages < 100; pages++ {
		body := fmt.Sprintf(`{"after":%q}`, after)
		if after == "" {
			body = ""
		}
		reply, result := inventoryReply(shards, "n1", "b1", []byte(body), maxPayload)
		if result != inventoryOK || len(reply) > maxPayload {
			t.Fatalf("page %d: %s, %d bytes", pages, result, len(reply))
		}
		var page control.InventoryPage
		if err := control.DecodeReply(reply, &page); err != nil {
			t.Fatal(err)
		}
		if page.Node != "n1" || page.BootID != "b1" || len(page.Shards) == 0 {
			t.Fatalf("page %d = %+v", pages, page)
		}
		for _, s := range page.Shards {
			got = append(got, s.ID)
		}
		if page.Next == "" {
			break
		}
		if page.Next != page.Shards[len(page.Shards)-1].ID {
			t.Fatalf("next %q is not the page's last id", page.Next)
		}
		after = page.Next
	}
	if len(got) != len(shards) || !slices.IsSorted(got) || pages < 5 {
		t.Fatalf("walked %d ids in %d pages (sorted %v), want all 300 in several pages", len(got), pages+1, slices.IsSorted(got))
	}
	if _, result := inventoryReply(shards, "n1", "b1", []byte("{"), maxPayload); result != inventoryInvalid {
		t.Fatalf("malformed request judged %s", result)
	}
	if reply, result := inventoryReply(shards, "n1", "b1", nil, 10); result != inventoryError {
		t.Fatalf("a limit no shard fits in judged %s: %s", result, reply)
	}
}

func TestInventoryReplyDatesShardsByTheirFiles(t *testing.T) {
	dir := t.TempDir()
	st, err := disk.Open(dir, disk.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	body := []byte("orphan me")
	sum := sha256.Sum256(body)
	if _, err := st.Put("obj-old", hex.EncodeToString(sum[:]), int64(len(body)), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	if err := os.Chtimes(filepath.Join(dir, "shards", "ob", "obj-old"), old, old); err != nil {
		t.Fatal(err)
	}
	reply, result := inventoryReply(st, "n1", "b1", nil, 1<<20)
	var page control.InventoryPage
	if err := control.DecodeReply(reply, &page); err != nil || result != inventoryOK {
		t.Fatalf("%s: %v", result, err)
	}
	if len(page.Shards) != 1 || !page.Shards[0].Written.Equal(old) {
		t.Fatalf("shards %+v, want obj-old written %s", page.Shards, old)
	}
	if time.Since(page.Now) > time.Minute || page.Now.IsZero() {
		t.Fatalf("page now %s, want the node's clock", page.Now)
	}
	// A store that cannot date its shards leaves them undated.
	reply, _ = inventoryReply(listPager{{ID: "x", Size: 1, SHA256: strings.Repeat("ab", 32)}}, "n1", "b1", nil, 1<<20)
	var undated control.InventoryPage
	if err := control.DecodeReply(reply, &undated); err != nil || len(undated.Shards) != 1 || !undated.Shards[0].Written.IsZero() {
		t.Fatalf("undated store: %+v, %v", undated.Shards, err)
	}
}
