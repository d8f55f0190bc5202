package cluster

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the first token of every subject the node uses.
const DefaultPrefix = "sb"

// TopicSubject returns the subject that carries topic's relayed messages:
// prefix, "t", then each "/"-separated segment of topic encoded on its own,
// joined with ".". The encoding is injective, so two topics never share a
// subject: bytes other than A-Z a-z 0-9 "_" "~" "-" become %XX (so "." is
// %2E and "%" is %25), and an empty segment becomes a lone "%", which no
// other segment encodes to. So "a.b" is <prefix>.t.a%2Eb and "a/b" is
// <prefix>.t.a.b.
func TopicSubject(prefix, topic string) (string, error) {
	var b strings.Builder
	b.Grow(len(prefix) + 3 + len(topic) + len(topic)/2)
	b.WriteString(prefix)
	b.WriteString(".t")
	for seg := range strings.SplitSeq(topic, "/") {
		b.WriteByte('.')
		if seg == "" {
			b.WriteByte('%')
			continue
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; plainTopicByte(c) {
				b.WriteByte(c)
			} else {
				b.WriteByte('%')
				b.WriteByte(upperHex[c>>4])
				b.WriteByte(upperHex[c&15])
			}
		}
	}
	s := b.String()
	if err := ValidSubject(s); err != nil {
		return "", fmt.Errorf("cluster: topic %.64q: %w", topic, err)
	}
	return s, nil
}

const upperHex = "0123456789ABCDEF"

// plainTopicByte reports whether c stands for itself in a topic's subject.
func plainTopicByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '~' || c == '-'
}

// NodeSubject returns the subject of one of node's services ("sync").
func NodeSubject(prefix, node, service string) string {
	return prefix + ".node." + node + "." + service
}
