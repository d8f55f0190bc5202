// Package topic defines the grammar of relay topic names and of the topic
// patterns that tokens may carry, and matches one against the other.
//
// A topic name is one or more segments separated by "/". Each segment is 1 to
// 64 characters from the URL-unreserved set [A-Za-z0-9._~-], and is neither
// "." nor "..". A whole name is at most 255 bytes. Names are case-sensitive.
// These rules keep a topic usable unescaped in a URL path, a NATS subject
// (after mapping "/" to ".") and a log line.
//
// A pattern is a name, or a name prefix followed by "/*", or "*" alone:
// "expt42/*" matches every topic under "expt42/" (at any depth) but not
// "expt42" itself; "*" matches every topic.
package topic

import (
	"errors"
	"fmt"
	"strings"
)

// Limits of the grammar.
const (
	MaxLength        = 255
	MaxSegmentLength = 64
)

// ErrInvalid is wrapped by every grammar violation reported by this package.
var ErrInvalid = errors.New("topic: invalid")

// Valid reports whether name is a well-formed topic name, and why not.
func Valid(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalid)
	}
	if len(name) > MaxLength {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxLength)
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '/' {
			if !unreserved(name[i]) {
				return fmt.Errorf("%w: character %q not allowed (use A-Z a-z 0-9 . _ ~ - and /)", ErrInvalid, name[i])
			}
			continue
		}
		seg := name[start:i]
		switch {
		case seg == "":
			return fmt.Errorf("%w: empty segment (leading, trailing or double /)", ErrInvalid)
		case len(seg) > MaxSegmentLength:
			return fmt.Errorf("%w: segment longer than %d bytes", ErrInvalid, MaxSegmentLength)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: segment %q not allowed", ErrInvalid, seg)
		}
		start = i + 1
	}
	return nil
}

// ValidPattern reports whether p is a well-formed topic pattern.
func ValidPattern(p string) error {
	if p == "*" {
		return nil
	}
	if base, ok := strings.CutSuffix(p, "/*"); ok {
		return Valid(base)
	}
	return Valid(p)
}

// IsPattern reports whether p contains a wildcard.
func IsPattern(p string) bool {
	return p == "*" || strings.HasSuffix(p, "/*")
}

// Match reports whether the topic name is granted by pattern. Both are assumed
// valid; an invalid pattern matches nothing it would not match textually.
func Match(pattern, name string) bool {
	if pattern == "*" {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/*"); ok {
		return len(name) > len(base)+1 && name[len(base)] == '/' && strings.HasPrefix(name, base)
	}
	return pattern == name
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
