package uwsapi

import (
	"errors"
	"strconv"
	"strings"
)

// Metric names in the summary CSV (docs/jobs.md, "Results"): the path of a
// value inside a run's metrics object, written so that it splits back.
//
//	name    = key *( "." key / "[" index "]" )
//	key     = *( plain / "\" special )       ; may be empty
//	special = "\" / "." / "[" / "]" / "'"
//	index   = "0" / nonzero-digit *digit       ; an array element
//
// So {"bytes_read": {"127.0.0.1:8080": 5}} is bytes_read.127\.0\.0\.1:8080
// and {"rtt": [3, 4]} gives rtt[0] and rtt[1]. A ' is escaped anywhere in
// a key, so a name never begins with one: a leading ' in the CSV cell is
// always the formula guard (csvText) and a reader strips it first.

// metricStep is one step of a metric's path: an object key, or an array
// index (IsIndex).
type metricStep struct {
	Key     string
	Index   int
	IsIndex bool
}

// metricSpecials are the characters escaped with a backslash in a key.
const metricSpecials = `\.[]'`

// escapeMetricKey escapes one object key of a metric name.
func escapeMetricKey(key string) string {
	if !strings.ContainsAny(key, metricSpecials) {
		return key
	}
	var b strings.Builder
	for i := 0; i < len(key); i++ { // bytewise: the specials are ASCII
		if strings.IndexByte(metricSpecials, key[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(key[i])
	}
	return b.String()
}

// metricChildKey is the name of member key of the object named parent
// (top: parent is the metrics object itself).
func metricChildKey(parent, key string, top bool) string {
	if top {
		return escapeMetricKey(key)
	}
	return parent + "." + escapeMetricKey(key)
}

// metricChildIndex is the name of element i of the array named parent.
func metricChildIndex(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// formatMetricName writes a path that starts with a key.
func formatMetricName(path []metricStep) string {
	var name string
	for i, s := range path {
		if s.IsIndex {
			name = metricChildIndex(name, s.Index)
		} else {
			name = metricChildKey(name, s.Key, i == 0)
		}
	}
	return name
}

var errMetricName = errors.New("malformed metric name")

// parseMetricName splits a metric name (after the CSV reader stripped the
// formula guard) back into its path; it accepts only what
// formatMetricName writes.
func parseMetricName(name string) ([]metricStep, error) {
	var path []metricStep
	var key strings.Builder
	i := 0
	// readKey reads a key up to an unescaped '.', '[' or the end.
	readKey := func() error {
		key.Reset()
		for i < len(name) {
			switch c := name[i]; c {
			case '\\':
				if i+1 >= len(name) || !strings.ContainsRune(metricSpecials, rune(name[i+1])) {
					return errMetricName
				}
				key.WriteByte(name[i+1])
				i += 2
			case '.', '[':
				return nil
			case ']', '\'':
				return errMetricName
			default:
				key.WriteByte(c)
				i++
			}
		}
		return nil
	}
	if err := readKey(); err != nil {
		return nil, err
	}
	path = append(path, metricStep{Key: key.String()})
	for i < len(name) {
		switch name[i] {
		case '.':
			i++
			if err := readKey(); err != nil {
				return nil, err
			}
			path = append(path, metricStep{Key: key.String()})
		case '[':
			end := strings.IndexByte(name[i:], ']')
			if end < 0 {
				return nil, errMetricName
			}
			digits := name[i+1 : i+end]
			n, err := strconv.Atoi(digits)
			if err != nil || n < 0 || strconv.Itoa(n) != digits {
				return nil, errMetricName
			}
			path = append(path, metricStep{Index: n, IsIndex: true})
			i += end + 1
		default:
			return nil, errMetricName
		}
	}
	return path, nil
}
