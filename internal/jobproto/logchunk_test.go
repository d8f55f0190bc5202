package jobproto

import (
	"bytes"
	"strings"
	"testing"
)

func TestLogChunkRoundTrip(t *testing.T) {
	text := LinesText([]string{"one", "two\nparts", ""})
	if string(text) != "one\ntwo parts\n\n" {
		t.Fatalf("LinesText: %q", text)
	}
	frame := AppendLogChunk(nil, "j1", StreamStderr, text)
	if !bytes.HasPrefix(frame, []byte(`{"type":"log","job":"j1","stream":"stderr"}`+"\n")) {
		t.Fatalf("frame: %q", frame)
	}
	hdr, got, err := ParseLogChunk(frame)
	if err != nil || hdr.Type != TypeLog || hdr.Job != "j1" || hdr.Stream != StreamStderr || !bytes.Equal(got, text) {
		t.Fatalf("parse: %+v %q %v", hdr, got, err)
	}
	// A last line without its end gets one; invalid UTF-8 is replaced.
	_, got, err = ParseLogChunk(AppendLogChunk(nil, "j1", StreamStdout, []byte("a\xffb\nlast")))
	if err != nil || string(got) != "a\uFFFDb\nlast\n" {
		t.Fatalf("mended: %q %v", got, err)
	}
}

func TestLogChunkMalformed(t *testing.T) {
	for _, frame := range []string{
		"",
		`{"type":"log","job":"j"}`, // no newline after the header
		`{"type":"result","job":"j","stream":"stdout"}` + "\nx\n",
		`{"type":"log","job":"j","stream":"stdout","lines":["a"]}` + "\nx\n",
		`not json` + "\nx\n",
		`{"type":"log","job":"j","stream":"stdout"}` + "\n" + strings.Repeat("x\n", MaxLogChunkBytes/2+1),
	} {
		if _, _, err := ParseLogChunk([]byte(frame)); err == nil {
			t.Errorf("%.60q: accepted", frame)
		}
	}
}
