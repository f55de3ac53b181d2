// Package httpstatus records the status code an HTTP handler answered, for
// the services' request metrics and spans.
package httpstatus

import (
	"io"
	"net/http"
)

// Recorder wraps a ResponseWriter and remembers the first status written
// through it (200 when the body starts without WriteHeader). Use one per
// request; it is not safe for concurrent use.
type Recorder struct {
	http.ResponseWriter
	// Code is 0 until the answer begins.
	Code int
}

// WriteHeader records code, then writes it.
func (r *Recorder) WriteHeader(code int) {
	if r.Code == 0 {
		r.Code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200, then writes b.
func (r *Recorder) Write(b []byte) (int, error) {
	if r.Code == 0 {
		r.Code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Status is the status answered so far: Code, or 200 when nothing was
// written (net/http answers 200 then).
func (r *Recorder) Status() int {
	if r.Code == 0 {
		return http.StatusOK
	}
	return r.Code
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *Recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// ReadFrom records an implicit 200, then hands src to the underlying
// writer's ReadFrom when it has one (net/http's does: it sends an *os.File
// with sendfile), else copies. Without it, wrapping a ResponseWriter in a
// Recorder would hide that zero-copy path.
func (r *Recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.Code == 0 {
		r.Code = http.StatusOK
	}
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{r.ResponseWriter}, src)
}

// writerOnly hides every method but Write (so io.Copy cannot loop back
// into ReadFrom).
type writerOnly struct{ io.Writer }
