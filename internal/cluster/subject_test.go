package cluster

import (
	"strconv"
	"strings"
	"testing"
)

// decodeTopic inverts TopicSubject: that it exists for every subject
// TopicSubject makes is what makes the encoding injective.
func decodeTopic(prefix, subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, prefix+".t.")
	if !ok {
		return "", false
	}
	var segs []string
	for tok := range strings.SplitSeq(rest, ".") {
		if tok == "%" {
			segs = append(segs, "")
			continue
		}
		var b strings.Builder
		for i := 0; i < len(tok); i++ {
			if tok[i] != '%' {
				b.WriteByte(tok[i])
				continue
			}
			if i+2 >= len(tok) {
				return "", false
			}
			n, err := strconv.ParseUint(tok[i+1:i+3], 16, 8)
			if err != nil {
				return "", false
			}
			b.WriteByte(byte(n))
			i += 2
		}
		segs = append(segs, b.String())
	}
	return strings.Join(segs, "/"), true
}

func TestTopicSubject(t *testing.T) {
	for topic, want := range map[string]string{
		"a.b":            "sb.t.a%2Eb",
		"a/b":            "sb.t.a.b",
		"a%2Eb":          "sb.t.a%252Eb",
		"expt42/cam-1_~": "sb.t.expt42.cam-1_~",
		"shell-host:x/y": "sb.t.shell-host%3Ax.y",
		"a//b":           "sb.t.a.%.b",
		"/":              "sb.t.%.%",
		"":               "sb.t.%",
		"*":              "sb.t.%2A",
		">/a b":          "sb.t.%3E.a%20b",
		"caf\u00e9":      "sb.t.caf%C3%A9",
	} {
		got, err := TopicSubject("sb", topic)
		if err != nil || got != want {
			t.Errorf("TopicSubject(%q) = %q, %v; want %q", topic, got, err, want)
		}
	}
	// The case DESIGN.md §6 names: a dot in a segment is not a separator.
	x, _ := TopicSubject("sb", "a.b")
	y, _ := TopicSubject("sb", "a/b")
	if x == y {
		t.Fatalf("a.b and a/b share the subject %s", x)
	}
	if _, err := TopicSubject("sb", strings.Repeat("%", 400)); err == nil {
		t.Error("a topic whose subject would be too long was accepted")
	}
}

// FuzzTopicSubject: every topic's subject is valid and decodes back to the
// topic, so no two topics share one.
func FuzzTopicSubject(f *testing.F) {
	for _, s := range []string{"a.b", "a/b", "", "/", "a//b", "%", "%2E", "x/%/y", "shell-host:a", "\x00", "a\xffb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		subject, err := TopicSubject("sb", topic)
		if err != nil {
			if len(topic) > 200 {
				return // too long to travel: refused, never confused
			}
			t.Fatalf("TopicSubject(%q): %v", topic, err)
		}
		if err := ValidSubject(subject); err != nil {
			t.Fatalf("TopicSubject(%q) = %q: %v", topic, subject, err)
		}
		if back, ok := decodeTopic("sb", subject); !ok || back != topic {
			t.Fatalf("TopicSubject(%q) = %q decodes to %q, %v", topic, subject, back, ok)
		}
	})
}

func TestValidSubject(t *testing.T) {
	for _, s := range []string{"a", "sb.t.x", "_INBOX.n1.7", "a-b.c~d.%2E"} {
		if err := ValidSubject(s); err != nil {
			t.Errorf("ValidSubject(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b", "a\x7f", strings.Repeat("a", MaxSubjectLength+1)} {
		if err := ValidSubject(s); err == nil {
			t.Errorf("ValidSubject(%q) accepted", s)
		}
	}
}
