package sseconn

import (
	"testing"

	"github.com/switchboard-hub/switchboard/internal/relay"
)

// TestAppendEvent: text is one data line per line (CR LF, CR and LF each
// end one), binary is an "event: binary" with standard base64; every event
// ends with a blank line.
func TestAppendEvent(t *testing.T) {
	for _, c := range []struct {
		m    relay.Message
		want string
	}{
		{relay.Message{Type: relay.Text, Data: []byte("hello")}, "data: hello\n\n"},
		{relay.Message{Type: relay.Text, Data: nil}, "data: \n\n"},
		{relay.Message{Type: relay.Text, Data: []byte("a\nb\r\nc\rd")}, "data: a\ndata: b\ndata: c\ndata: d\n\n"},
		{relay.Message{Type: relay.Text, Data: []byte("end\n")}, "data: end\ndata: \n\n"},
		{relay.Message{Type: relay.Text, Data: []byte("a\rb\nc")}, "data: a\ndata: b\ndata: c\n\n"}, // CR before LF
		{relay.Message{Type: relay.Text, Data: []byte("a\n\rb")}, "data: a\ndata: \ndata: b\n\n"},   // LF CR: two line ends
		{relay.Message{Type: relay.Text, Data: []byte(" lead\r\n")}, "data:  lead\ndata: \n\n"},
		{relay.Message{Type: relay.Binary, Data: []byte{0, 0xff, '\n'}}, "event: binary\ndata: AP8K\n\n"},
		{relay.Message{Type: relay.Binary, Data: nil}, "event: binary\ndata: \n\n"},
	} {
		if got := string(AppendEvent([]byte("x"), c.m)); got != "x"+c.want {
			t.Errorf("%s %q: %q, want %q", c.m.Type, c.m.Data, got, "x"+c.want)
		}
	}
}
