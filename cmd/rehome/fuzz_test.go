package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzParseEC feeds arbitrary --ec values to their parser: what it accepts
// is a valid erasure-coded layout that prints back as K+M and parses again
// to the same layout; everything else is a one-line error naming the flag.
func FuzzParseEC(f *testing.F) {
	f.Add("4+2")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := parseEC(s)
		if err != nil {
			if msg := err.Error(); bytes.ContainsAny([]byte(msg), "\n\r") || !bytes.HasPrefix([]byte(msg), []byte("--ec ")) {
				t.Fatalf("error for %q is not one line naming --ec: %q", s, msg)
			}
			return
		}
		if !l.Erasure() || l.Validate() != nil {
			t.Fatalf("accepted %q as %+v", s, l)
		}
		again, err := parseEC(fmt.Sprintf("%d+%d", l.K, l.M))
		if err != nil || again != l {
			t.Fatalf("%q read as %+v, printed and read again as %+v %v", s, l, again, err)
		}
	})
}

// FuzzPrintEvent feeds arbitrary subjects and payloads to `rehome events`:
// every message prints as exactly one line; with --json that line is a JSON
// object carrying the subject and the payload (as JSON when it is JSON,
// else as a string of its bytes).
func FuzzPrintEvent(f *testing.F) {
	f.Add("rehome.node.down.storage-1", []byte(`{"v":1,"node":"storage-1","state":"down"}`), false)
	f.Fuzz(func(t *testing.T, subject string, data []byte, asJSON bool) {
		var out bytes.Buffer
		if err := printEvent(&out, &nats.Msg{Subject: subject, Data: data}, asJSON); err != nil {
			t.Fatalf("print %q: %v", data, err)
		}
		line := out.Bytes()
		if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' || bytes.ContainsRune(line, '\r') {
			if !bytes.ContainsAny([]byte(subject), "\r\n") {
				t.Fatalf("printed %q as %q: not one line", data, line)
			}
		}
		if !asJSON {
			return
		}
		var got struct {
			Subject string          `json:"subject"`
			Data    json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("--json printed %q: %v", line, err)
		}
		var want bytes.Buffer
		if json.Compact(&want, data) == nil && !bytes.Equal(got.Data, want.Bytes()) {
			t.Fatalf("payload %q printed as %q", data, got.Data)
		}
	})
}
