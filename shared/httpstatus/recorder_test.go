package httpstatus

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// readFromWriter is a ResponseWriter with a ReadFrom of its own, as
// net/http's is.
type readFromWriter struct {
	*httptest.ResponseRecorder
	readFrom int64
}

func (w *readFromWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(w.ResponseRecorder, r)
	w.readFrom += n
	return n, err
}

func TestReadFromReachesTheUnderlyingWriter(t *testing.T) {
	w := &readFromWriter{ResponseRecorder: httptest.NewRecorder()}
	rec := &Recorder{ResponseWriter: w}
	n, err := io.Copy(rec, io.LimitReader(strings.NewReader("hello, world"), 5))
	if err != nil || n != 5 || w.readFrom != 5 || w.Body.String() != "hello" {
		t.Fatalf("copied %d (%v); the writer's ReadFrom saw %d, body %q", n, err, w.readFrom, w.Body.String())
	}
	if rec.Status() != http.StatusOK || rec.Code != http.StatusOK {
		t.Fatalf("status %d (code %d), want an implicit 200", rec.Status(), rec.Code)
	}
	// A writer without ReadFrom still gets every byte.
	plain := httptest.NewRecorder()
	rec = &Recorder{ResponseWriter: plain}
	if n, err := io.Copy(rec, strings.NewReader("abc")); err != nil || n != 3 || plain.Body.String() != "abc" {
		t.Fatalf("plain writer: %d, %v, %q", n, err, plain.Body.String())
	}
}
