package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// HeaderSize is the fixed length of the header in front of every shard file's bytes.
const HeaderSize = 64

// magic opens every shard file; the trailing digit is the format version.
var magic = [8]byte{'R', 'H', 'S', 'H', 'A', 'R', 'D', '1'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is what a shard file says about itself: how many bytes follow and
// their SHA-256. Layout (big endian): magic[0:8] size[8:16] sha256[16:48]
// crc32c(header[0:48])[48:52], zero padding to HeaderSize.
type header struct {
	Size   int64
	SHA256 [32]byte
}

var errBadHeader = errors.New("bad shard file header")

// encode renders h as the HeaderSize bytes written in front of the shard.
func (h header) encode() [HeaderSize]byte {
	var b [HeaderSize]byte
	copy(b[0:8], magic[:])
	binary.BigEndian.PutUint64(b[8:16], uint64(h.Size))
	copy(b[16:48], h.SHA256[:])
	binary.BigEndian.PutUint32(b[48:52], crc32.Checksum(b[0:48], castagnoli))
	return b
}

// decodeHeader parses and checks a header: magic, checksum, padding and a
// non-negative size. Any damage yields errBadHeader.
func decodeHeader(b []byte) (header, error) {
	var h header
	if len(b) != HeaderSize || !bytes.Equal(b[0:8], magic[:]) {
		return h, errBadHeader
	}
	if binary.BigEndian.Uint32(b[48:52]) != crc32.Checksum(b[0:48], castagnoli) {
		return h, errBadHeader
	}
	for _, c := range b[52:] {
		if c != 0 {
			return h, errBadHeader
		}
	}
	size := binary.BigEndian.Uint64(b[8:16])
	if size > 1<<62 {
		return h, errBadHeader
	}
	h.Size = int64(size)
	copy(h.SHA256[:], b[16:48])
	return h, nil
}
