package s3

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// awsChunked decodes an aws-chunked request body (SigV4 streaming uploads,
// signed or not, with or without trailing checksums):
//
//	<hex size>[;chunk-signature=<sig>]\r\n<size bytes>\r\n ... 0[;...]\r\n[<trailer>\r\n]*\r\n
//
// It yields the payload and ends at the zero-size chunk, after reading the
// trailers. Chunk signatures are not verified (the request's seed signature
// is, before the body is read). A malformed framing is an error.
type awsChunked struct {
	r      *bufio.Reader
	remain int64 // bytes left in the current chunk
	first  bool
	done   bool
}

func newAWSChunked(r io.Reader) *awsChunked {
	return &awsChunked{r: bufio.NewReaderSize(r, 64<<10), first: true}
}

var errChunkFraming = errors.New("malformed aws-chunked body")

// maxChunkLine bounds a chunk header line (size, extensions, signature).
const maxChunkLine = 4096

func (c *awsChunked) line() (string, error) {
	var buf []byte
	for {
		part, more, err := c.r.ReadLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		buf = append(buf, part...)
		if len(buf) > maxChunkLine {
			return "", fmt.Errorf("%w: header line over %d bytes", errChunkFraming, maxChunkLine)
		}
		if !more {
			return string(buf), nil
		}
	}
}

func (c *awsChunked) next() error {
	if !c.first {
		var crlf [2]byte
		if _, err := io.ReadFull(c.r, crlf[:]); err != nil {
			return io.ErrUnexpectedEOF
		}
		if !bytes.Equal(crlf[:], []byte("\r\n")) {
			return fmt.Errorf("%w: chunk not followed by CRLF", errChunkFraming)
		}
	}
	c.first = false
	l, err := c.line()
	if err != nil {
		return err
	}
	sizeHex, _, _ := strings.Cut(l, ";")
	size, err := strconv.ParseInt(strings.TrimSpace(sizeHex), 16, 64)
	if err != nil || size < 0 {
		return fmt.Errorf("%w: chunk size %.20q", errChunkFraming, sizeHex)
	}
	if size == 0 {
		// Trailers (e.g. x-amz-checksum-crc32:...), then an empty line.
		for {
			t, err := c.line()
			if err != nil {
				return err
			}
			if t == "" {
				break
			}
		}
		c.done = true
		return nil
	}
	c.remain = size
	return nil
}

// Read implements io.Reader.
func (c *awsChunked) Read(p []byte) (int, error) {
	for c.remain == 0 {
		if c.done {
			return 0, io.EOF
		}
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	if int64(len(p)) > c.remain {
		p = p[:c.remain]
	}
	n, err := c.r.Read(p)
	c.remain -= int64(n)
	if errors.Is(err, io.EOF) {
		if c.remain > 0 {
			return n, io.ErrUnexpectedEOF
		}
		err = nil
	}
	return n, err
}

// isAWSChunked reports whether x-amz-content-sha256 announces an aws-chunked body.
func isAWSChunked(contentSHA string) bool { return strings.HasPrefix(contentSHA, "STREAMING-") }
