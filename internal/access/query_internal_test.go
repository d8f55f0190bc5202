package access

import (
	"net/url"
	"testing"
)

// FuzzQueryValue: queryValue answers as url.Values' Get and Has of the
// parsed query do (the connect path reads its code with it).
func FuzzQueryValue(f *testing.F) {
	for _, q := range []string{
		"", "code=abc.n1", "x=1&code=abc.n1", "code=a&code=b", "code", "code=", "&&code=x&",
		"code=a%2Eb", "c%6Fde=x", "code=%zz&code=ok", "code=a;b&code=c", "a=1;code=2", "code=a+b", "%zz=1&code=y",
	} {
		f.Add(q, "code")
	}
	f.Fuzz(func(t *testing.T, rawQuery, key string) {
		want := url.Values{}
		if v, err := url.ParseQuery(rawQuery); err == nil || v != nil {
			want = v
		}
		got, found := queryValue(rawQuery, key)
		if got != want.Get(key) || found != want.Has(key) {
			t.Fatalf("queryValue(%q, %q) = %q, %v; url.Values: %q, %v", rawQuery, key, got, found, want.Get(key), want.Has(key))
		}
	})
}
