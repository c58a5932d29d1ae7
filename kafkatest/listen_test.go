package kafkatest

import (
	"encoding/binary"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// frame encodes req as a client sends it.
func frame(req kmsg.Request, corr int32) []byte {
	return kmsg.NewRequestFormatter(kmsg.FormatterClientID("c")).AppendRequest(nil, req, corr)
}

// The parser finds the SASL requests in a stream of requests however it
// is split, and the correlation ID of every response.
func TestFrameParser(t *testing.T) {
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, "SCRAM-SHA-512"
	auth := kmsg.NewPtrSASLAuthenticateRequest()
	auth.Version, auth.SASLAuthBytes = 2, []byte("n,,n=u,r=abc")
	meta := kmsg.NewPtrMetadataRequest()
	meta.Version = 9
	var stream []byte
	stream = append(stream, frame(meta, 1)...)
	stream = append(stream, frame(hs, 2)...)
	stream = append(stream, frame(meta, 3)...)
	stream = append(stream, frame(auth, 4)...)
	for _, chunk := range []int{1, 3, 7, len(stream)} {
		var p frameParser
		var got []int32
		var mech string
		for b := stream; len(b) > 0; {
			n := min(chunk, len(b))
			p.feed(b[:n], func(key, version int16, corr int32, body []byte) {
				got = append(got, corr)
				if key == keySASLHandshake {
					r := kmsg.NewPtrSASLHandshakeRequest()
					r.Version = version
					if err := r.ReadFrom(body); err != nil {
						t.Fatal(err)
					}
					mech = r.Mechanism
				}
			})
			b = b[n:]
		}
		if len(got) != 2 || got[0] != 2 || got[1] != 4 || mech != "SCRAM-SHA-512" {
			t.Errorf("chunks of %d: SASL requests %v, mechanism %q", chunk, got, mech)
		}
	}

	var out []byte
	for corr, size := range []int{0, 5, 300} {
		out = binary.BigEndian.AppendUint32(out, uint32(4+size))
		out = binary.BigEndian.AppendUint32(out, uint32(corr+10))
		out = append(out, make([]byte, size)...)
	}
	for _, chunk := range []int{1, 5, len(out)} {
		var p frameParser
		var got []int32
		for b := out; len(b) > 0; {
			n := min(chunk, len(b))
			p.feedResponse(b[:n], func(corr int32) { got = append(got, corr) })
			b = b[n:]
		}
		if len(got) != 3 || got[0] != 10 || got[1] != 11 || got[2] != 12 {
			t.Errorf("chunks of %d: responses %v", chunk, got)
		}
	}
}
