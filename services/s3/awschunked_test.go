package s3

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestAWSChunkedDecodes(t *testing.T) {
	cases := map[string]struct{ body, want string }{
		"signed":   {"5;chunk-signature=abc\r\nhello\r\n6;chunk-signature=def\r\n world\r\n0;chunk-signature=000\r\n\r\n", "hello world"},
		"trailer":  {"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n", "abc"},
		"empty":    {"0\r\n\r\n", ""},
		"big-hex":  {"a\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
		"two-trls": {"1\r\nz\r\n0\r\na:1\r\nb:2\r\n\r\n", "z"},
	}
	for name, c := range cases {
		got, err := io.ReadAll(newAWSChunked(strings.NewReader(c.body)))
		if err != nil || string(got) != c.want {
			t.Errorf("%s: got %q, %v; want %q", name, got, err, c.want)
		}
	}
}

func TestAWSChunkedRefusesBadFraming(t *testing.T) {
	for name, body := range map[string]string{
		"truncated data":  "5\r\nhel",
		"no final chunk":  "5\r\nhello\r\n",
		"bad size":        "zz\r\nhello\r\n0\r\n\r\n",
		"negative":        "-1\r\n\r\n",
		"missing crlf":    "5\r\nhelloXX0\r\n\r\n",
		"endless header":  strings.Repeat("1", 10000),
		"no trailer end":  "1\r\nz\r\n0\r\nx:1\r\n",
		"nothing at all":  "",
		"size past limit": "ffffffffffffffffff\r\n",
	} {
		_, err := io.ReadAll(newAWSChunked(strings.NewReader(body)))
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errors.Is(err, errChunkFraming) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: unexpected error kind %v", name, err)
		}
	}
}

func FuzzAWSChunked(f *testing.F) {
	f.Add([]byte("5;chunk-signature=abc\r\nhello\r\n0;chunk-signature=000\r\n\r\n"))
	f.Add([]byte("3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := io.ReadAll(newAWSChunked(bytes.NewReader(body)))
		if err == nil && len(out) > len(body) {
			t.Fatalf("decoded %d bytes from %d", len(out), len(body))
		}
	})
}
