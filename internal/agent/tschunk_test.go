package agent

import (
	"bytes"
	"testing"
	"unicode/utf8"

	"github.com/switchboard-hub/switchboard/pkg/client"
)

// chunkAll feeds data to c in pieces of the given sizes (cycled) and returns
// the messages emitted, copied.
func chunkAll(c chunker, data []byte, sizes []int) [][]byte {
	var msgs [][]byte
	emit := func(m []byte) error {
		msgs = append(msgs, bytes.Clone(m))
		return nil
	}
	for i := 0; len(data) > 0; i++ {
		n := len(data)
		if len(sizes) > 0 {
			n = min(max(sizes[i%len(sizes)], 1), len(data))
		}
		c.write(data[:n], emit)
		data = data[n:]
	}
	return msgs
}

func tsStream(packets int) []byte {
	b := make([]byte, packets*tsPacket)
	for i := range b {
		b[i] = byte(i * 7)
	}
	for p := 0; p < packets; p++ {
		b[p*tsPacket] = 0x47
	}
	return b
}

func TestTSChunker(t *testing.T) {
	for _, tc := range []struct {
		name  string
		max   int
		data  []byte
		sizes []int
		want  []int // message lengths
		rest  int
	}{
		{"aligned reads", 32 << 10, tsStream(10), []int{188 * 3}, []int{564, 564, 564, 188}, 0},
		{"one big read is split at max", 188 * 4, tsStream(10), nil, []int{752, 752, 376}, 0},
		{"max rounded down", 1000, tsStream(10), nil, []int{940, 940}, 0},
		{"max below a packet is one packet", 100, tsStream(2), nil, []int{188, 188}, 0},
		{"partial packets wait", 32 << 10, tsStream(3), []int{100, 100, 100, 100, 164}, []int{188, 188, 188}, 0},
		{"byte by byte", 32 << 10, tsStream(2), []int{1}, []int{188, 188}, 0},
		{"partial completed with more", 32 << 10, tsStream(5), []int{50, 800}, []int{752, 188}, 0},
		{"completion respects max", 188 * 2, tsStream(6), []int{10, 1118}, []int{376, 376, 376}, 0},
		{"trailing partial kept", 32 << 10, tsStream(2)[:300], nil, []int{188}, 112},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTSChunker(tc.max)
			msgs := chunkAll(c, tc.data, tc.sizes)
			var got []int
			var all []byte
			for _, m := range msgs {
				got = append(got, len(m))
				all = append(all, m...)
			}
			if !slicesEqual(got, tc.want) {
				t.Errorf("message lengths %v, want %v", got, tc.want)
			}
			if c.pending() != tc.rest {
				t.Errorf("pending %d, want %d", c.pending(), tc.rest)
			}
			if !bytes.Equal(all, tc.data[:len(tc.data)-tc.rest]) {
				t.Errorf("bytes changed")
			}
		})
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFixedChunker(t *testing.T) {
	data := bytes.Repeat([]byte("abcdefghij"), 100)
	msgs := chunkAll(fixedChunker{max: 300}, data, []int{700, 300})
	var got []int
	for _, m := range msgs {
		got = append(got, len(m))
	}
	if want := []int{300, 300, 100, 300}; !slicesEqual(got, want) {
		t.Fatalf("lengths %v, want %v", got, want)
	}
	if !bytes.Equal(bytes.Join(msgs, nil), data) {
		t.Fatal("bytes changed")
	}
}

// FuzzTSChunker: whatever the stream and however it is cut into writes, the
// messages hold the stream's bytes in order, none lost (but a final partial
// packet, which stays pending), every message a non-empty multiple of 188
// bytes no larger than the limit.
func FuzzTSChunker(f *testing.F) {
	f.Add(tsStream(3), uint16(32<<10), []byte{100, 20, 255})
	f.Add(tsStream(20), uint16(188*2), []byte{1})
	f.Add([]byte("not ts at all"), uint16(188), []byte{})
	f.Add(tsStream(7)[:1000], uint16(500), []byte{187, 189, 188})
	f.Fuzz(func(t *testing.T, data []byte, max uint16, cuts []byte) {
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c) * 3 // up to 765, so writes span packets
		}
		c := newTSChunker(int(max))
		limit := c.max
		msgs := chunkAll(c, data, sizes)
		var all []byte
		for i, m := range msgs {
			if len(m) == 0 || len(m)%tsPacket != 0 || len(m) > limit {
				t.Fatalf("message %d has %d bytes (limit %d)", i, len(m), limit)
			}
			all = append(all, m...)
		}
		want := len(data) - len(data)%tsPacket
		if c.pending() != len(data)%tsPacket {
			t.Fatalf("pending %d, want %d", c.pending(), len(data)%tsPacket)
		}
		if !bytes.Equal(all, data[:want]) {
			t.Fatalf("bytes lost or reordered: got %d bytes, want %d", len(all), want)
		}
	})
}

func TestSplitMessage(t *testing.T) {
	var parts [][]byte
	emit := func(p []byte) { parts = append(parts, p) }
	text := []byte("aé€" + "xyz") // 1 + 2 + 3 + 3 bytes
	splitMessage(client.Text, text, 4, emit)
	for _, p := range parts {
		if len(p) > 4 || !utf8.Valid(p) {
			t.Fatalf("part %q", p)
		}
	}
	if !bytes.Equal(bytes.Join(parts, nil), text) {
		t.Fatal("text changed")
	}
	parts = nil
	splitMessage(client.Binary, make([]byte, 10), 4, emit)
	if len(parts) != 3 || len(parts[2]) != 2 {
		t.Fatalf("binary parts %d", len(parts))
	}
	parts = nil
	splitMessage(client.Binary, make([]byte, 4), 4, emit)
	if len(parts) != 1 {
		t.Fatal("a message at the limit was split")
	}
}
