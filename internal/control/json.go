package control

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a JSON duration: a Go duration string ("90s", "2h") or a
// number of seconds.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: want e.g. \"90s\" or \"2h\"", s)
		}
		*d = Duration(v)
		return nil
	}
	var n float64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration: want a string such as \"2h\" or a number of seconds")
	}
	if n > float64(1<<62)/1e9 || n < -float64(1<<62)/1e9 {
		return fmt.Errorf("duration %v seconds out of range", n)
	}
	*d = Duration(time.Duration(n * float64(time.Second)))
	return nil
}

// jsonRaw embeds stored JSON as is (it was produced by this package).
func jsonRaw(s string) json.RawMessage {
	if !json.Valid([]byte(s)) {
		b, _ := json.Marshal(s)
		return b
	}
	return json.RawMessage(s)
}
