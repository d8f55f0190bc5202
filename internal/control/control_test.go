package control

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/store"
)

func TestRevocations(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	r := NewRevocations(func() time.Time { return now })
	r.Load([]store.Revocation{
		{Kind: store.RevokeBooking, Value: "b1", ExpiresAt: now.Add(time.Hour), CreatedAt: now.Add(-time.Minute)},
		{Kind: store.RevokeSubject, Value: "mallory", ExpiresAt: now.Add(time.Hour), CreatedAt: now},
		{Kind: store.RevokeToken, Value: "old", ExpiresAt: now.Add(-time.Second)},
	}, []store.Allowance{{BookingID: "b2", ExpiresAt: now.Add(time.Hour)}})
	for _, tc := range []struct {
		booking, sub, jti, kind string
		denied                  bool
	}{
		{"b1", "", "", "booking", true},
		{"b2", "alice", "j", "", false},
		{"", "mallory", "", "subject", true},
		{"", "", "old", "", false}, // expired
		{"", "", "", "", false},
	} {
		kind, denied := r.Denied(tc.booking, tc.sub, tc.jti)
		if kind != tc.kind || denied != tc.denied {
			t.Errorf("Denied(%q,%q,%q) = %q %v", tc.booking, tc.sub, tc.jti, kind, denied)
		}
	}
	if l := r.List(""); len(l) != 2 || l[0].Value != "b1" {
		t.Fatalf("List: %+v", l)
	}
	r.Remove(store.RevokeBooking, "b1", &store.Allowance{BookingID: "b1", ExpiresAt: now.Add(time.Hour)})
	if _, denied := r.Denied("b1", "", ""); denied {
		t.Fatal("still denied after Remove")
	}
	if a := r.Allowances(); len(a) != 2 || a[0].BookingID != "b1" {
		t.Fatalf("Allowances: %+v", a)
	}
	r.Add(store.Revocation{Kind: store.RevokeBooking, Value: "b1", ExpiresAt: now.Add(time.Hour)})
	if a := r.Allowances(); len(a) != 1 {
		t.Fatalf("re-deny kept the allowance: %+v", a)
	}
	r.Purge(now.Add(2 * time.Hour))
	if l, a := r.List(""), r.Allowances(); len(l) != 0 || len(a) != 0 {
		t.Fatalf("after Purge: %+v %+v", l, a)
	}
	r.mu.RLock()
	n := len(r.revoked[store.RevokeToken])
	r.mu.RUnlock()
	if n != 0 {
		t.Fatalf("Purge kept %d expired token revocations in memory", n)
	}
	m, ok := identityMatch(store.RevokeSubject, "mallory")
	if !ok || !m.Matches(relay.Identity{Subject: "mallory"}) || m.Matches(relay.Identity{Subject: "alice", BookingID: "mallory"}) {
		t.Fatal("identityMatch")
	}
}

func TestDurationJSON(t *testing.T) {
	for in, want := range map[string]time.Duration{`"90s"`: 90 * time.Second, `3600`: time.Hour, `1.5`: 1500 * time.Millisecond} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || time.Duration(d) != want {
			t.Errorf("%s: %v %v", in, time.Duration(d), err)
		}
	}
	for _, in := range []string{`"soon"`, `true`, `1e300`, `{}`} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}

// TestDropCountsCoverEveryReason: the status report names every drop reason.
func TestDropCountsCoverEveryReason(t *testing.T) {
	b, _ := json.Marshal(DropCounts{})
	var m map[string]uint64
	json.Unmarshal(b, &m)
	for _, r := range relay.DropReasons() {
		if _, ok := m[r.String()]; !ok {
			t.Errorf("DropCounts lacks %q", r)
		}
	}
	if len(m) != int(relay.NumDropReasons) {
		t.Errorf("DropCounts has %d fields, relay has %d reasons", len(m), relay.NumDropReasons)
	}
}

func TestReportMessagesSplit(t *testing.T) {
	report := make([]ConnReport, 100)
	for i := range report {
		report[i] = ConnReport{ID: fmt.Sprint(i), Topic: "t", Scopes: []string{}}
	}
	whole, _ := json.Marshal(report)
	if msgs := reportMessages(report, len(whole)); len(msgs) != 1 {
		t.Fatalf("%d messages for a report that fits", len(msgs))
	}
	msgs := reportMessages(report, len(whole)/5)
	if len(msgs) < 5 {
		t.Fatalf("%d messages", len(msgs))
	}
	var ids []string
	for _, m := range msgs {
		var part []ConnReport
		if len(m) > len(whole)/5 || json.Unmarshal(m, &part) != nil {
			t.Fatalf("part of %d bytes, limit %d", len(m), len(whole)/5)
		}
		for _, r := range part {
			ids = append(ids, r.ID)
		}
	}
	for i, id := range ids {
		if id != fmt.Sprint(i) {
			t.Fatalf("connection %d is %s: parts out of order or lost", i, id)
		}
	}
}
