package jobproto

// Log chunks: a run's output sent as a block of whole lines in one binary
// frame, so that neither side encodes, parses or handles its lines one by
// one (a talkative action's output is the control channel's bulk).
//
// A log chunk is the one control message that is not a text frame: a
// binary frame holding the JSON header of a Log message without Lines
// ({"type":"log","job":…,"stream":…}), one '\n', then the output: whole
// lines, each ended by '\n' (none holds '\n'; the agent drops a '\r'
// before it and cuts a line at MaxLogLineBytes), valid UTF-8, at most
// MaxLogChunkBytes. An agent sends chunks only to a hub whose Welcome sets
// LogChunks; to an older hub it sends Log messages with Lines, which every
// hub still takes (a hub before chunks closes the channel on a binary
// frame).

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// MaxLogChunkBytes bounds the output of one log chunk: with its header it
// stays within MaxMessageBytes.
const MaxLogChunkBytes = 256 << 10

// AppendLogChunk appends the log chunk frame of job's output text on
// stream to dst: the header, '\n', then text, which must be whole lines
// each ended by '\n'.
func AppendLogChunk(dst []byte, job, stream string, text []byte) []byte {
	h, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Job    string `json:"job"`
		Stream string `json:"stream"`
	}{TypeLog, job, stream})
	dst = append(dst, h...)
	dst = append(dst, '\n')
	return append(dst, text...)
}

// ErrLogChunk is returned by ParseLogChunk for a malformed chunk.
var ErrLogChunk = errors.New("jobproto: malformed log chunk")

// ParseLogChunk reads a log chunk frame: its header (Type TypeLog, Job,
// Stream; Lines empty) and its output, which aliases frame. Output that
// does not end with '\n' gets one (a copy); invalid UTF-8 is replaced
// (U+FFFD). The stream and the job are the caller's to check.
func ParseLogChunk(frame []byte) (hdr Log, text []byte, err error) {
	i := bytes.IndexByte(frame, '\n')
	if i < 0 || len(frame) > MaxMessageBytes {
		return Log{}, nil, ErrLogChunk
	}
	if err := json.Unmarshal(frame[:i], &hdr); err != nil || hdr.Type != TypeLog || len(hdr.Lines) > 0 {
		return Log{}, nil, ErrLogChunk
	}
	text = frame[i+1:]
	if len(text) > MaxLogChunkBytes {
		return Log{}, nil, ErrLogChunk
	}
	if len(text) > 0 && text[len(text)-1] != '\n' {
		text = append(text[:len(text):len(text)], '\n')
	}
	if !utf8.Valid(text) {
		text = bytes.ToValidUTF8(text, []byte("\uFFFD"))
	}
	return hdr, text, nil
}

// LinesText returns lines as chunk output: each line ended by '\n', a
// '\n' inside a line replaced by a space (as the hub keeps lines of Log
// messages).
func LinesText(lines []string) []byte {
	n := 0
	for _, l := range lines {
		n += len(l) + 1
	}
	b := make([]byte, 0, n)
	for _, l := range lines {
		start := len(b)
		b = append(b, l...)
		for j := bytes.IndexByte(b[start:], '\n'); j >= 0; j = bytes.IndexByte(b[start:], '\n') {
			b[start+j] = ' '
		}
		b = append(b, '\n')
	}
	return b
}
