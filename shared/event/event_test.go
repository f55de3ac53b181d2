package event_test

import (
	"crypto/rand"
	"errors"
	"testing"

	"github.com/rehome/rehome/shared/event"
)

func TestEncodeStampsVersionAndTime(t *testing.T) {
	b, err := event.Encode(&event.Verdict{Node: "storage-1", State: "down", Reason: "silent"})
	if err != nil {
		t.Fatal(err)
	}
	var v event.Verdict
	if err := event.Decode(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.V != 1 || v.TS.IsZero() || v.TS.Location().String() != "UTC" || v.Node != "storage-1" {
		t.Fatalf("round trip lost fields: %+v", v)
	}
}

func TestDecodeRefusesWhatNobodyShouldActOn(t *testing.T) {
	junk := make([]byte, 64<<10)
	_, _ = rand.Read(junk)
	cases := map[string]string{
		"not json":       "hello",
		"truncated":      `{"v":1,"node":"storage-1"`,
		"wrong version":  `{"v":2,"node":"storage-1","rack":"r","addr":"a","boot_id":"b"}`,
		"no version":     `{"node":"storage-1","rack":"r","addr":"a","boot_id":"b"}`,
		"dotted node":    `{"v":1,"node":"storage.1","boot_id":"b"}`,
		"negative bytes": `{"v":1,"node":"storage-1","boot_id":"b","used_bytes":-5}`,
		"random":         string(junk),
	}
	for name, in := range cases {
		var hb event.Heartbeat
		if err := event.Decode([]byte(in), &hb); !errors.Is(err, event.ErrMalformed) {
			t.Errorf("%s: want ErrMalformed, got %v", name, err)
		}
	}
	good := `{"v":1,"ts":"2026-01-01T00:00:00Z","node":"storage-1","rack":"rack-1","addr":"127.0.0.1:1","boot_id":"b","shards":3}`
	var hb event.Heartbeat
	if err := event.Decode([]byte(good), &hb); err != nil || hb.Shards != 3 {
		t.Fatalf("good heartbeat refused: %v", err)
	}
}

func TestTaskValidation(t *testing.T) {
	sha := "0000000000000000000000000000000000000000000000000000000000000000"
	ok := event.Task{Task: "t", Shard: "s-1", Kind: event.KindCopy, Sources: []string{"a"}, Target: "b", SHA256: sha}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []event.Task{
		{Task: "", Shard: "s", Kind: "copy", Sources: []string{"a"}, Target: "b", SHA256: sha},
		{Task: "t", Shard: "../x", Kind: "copy", Sources: []string{"a"}, Target: "b", SHA256: sha},
		{Task: "t", Shard: "s", Kind: "copy", Target: "b", SHA256: sha},
		{Task: "t", Shard: "s", Kind: "explode", Sources: []string{"a"}, Target: "b", SHA256: sha},
		{Task: "t", Shard: "s", Kind: "copy", Sources: []string{"a/b"}, Target: "b", SHA256: sha},
	}
	for i, tk := range bad {
		if tk.Validate() == nil {
			t.Errorf("case %d accepted: %+v", i, tk)
		}
	}
}

func TestLastToken(t *testing.T) {
	if got := event.LastToken(event.DownPrefix + "storage-3"); got != "storage-3" {
		t.Fatalf("got %q", got)
	}
}

func TestRebuildTaskValidation(t *testing.T) {
	sha := "0000000000000000000000000000000000000000000000000000000000000000"
	piece := func(i int, node string) event.Piece {
		return event.Piece{Shard: "o-s0p" + string(rune('0'+i)), Index: i, Node: node, Size: 10, SHA256: sha}
	}
	ok := event.Task{Task: "t", Shard: "o-s0p1", Kind: event.KindRebuild, Sources: []string{"a", "c", "d", "e"}, Target: "x", SHA256: sha, Bytes: 10,
		K: 4, M: 2,
		Stripe:  []event.Piece{piece(0, "a"), piece(1, ""), piece(2, "c"), piece(3, "d"), piece(4, "e"), piece(5, "")},
		Rebuild: []event.Piece{piece(1, "x"), piece(5, "y")}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tooFew := ok
	tooFew.Stripe = []event.Piece{piece(0, "a"), piece(1, ""), piece(2, ""), piece(3, "d"), piece(4, "e"), piece(5, "")}
	noTarget := ok
	noTarget.Rebuild = []event.Piece{piece(1, "")}
	short := ok
	short.Stripe = ok.Stripe[:5]
	for name, tk := range map[string]event.Task{"fewer than k held": tooFew, "no target": noTarget, "short stripe": short} {
		if tk.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
