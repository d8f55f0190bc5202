package relay

import "testing"

// TestIdentityMatch: a match compares exactly one part of an identity, and
// an empty value or unknown kind matches nothing — not every identity whose
// part is empty too.
func TestIdentityMatch(t *testing.T) {
	id := Identity{BookingID: "b1", Subject: "mallory", TokenID: "j1"}
	anon := Identity{}
	for _, tc := range []struct {
		m          IdentityMatch
		valid, hit bool
	}{
		{IdentityMatch{IdentityBooking, "b1"}, true, true},
		{IdentityMatch{IdentitySubject, "mallory"}, true, true},
		{IdentityMatch{IdentityToken, "j1"}, true, true},
		{IdentityMatch{IdentityBooking, "mallory"}, true, false}, // the value of another part
		{IdentityMatch{IdentitySubject, "b1"}, true, false},
		{IdentityMatch{IdentityToken, "j2"}, true, false},
		{IdentityMatch{IdentityBooking, ""}, false, false},
		{IdentityMatch{"label", "b1"}, false, false},
		{IdentityMatch{}, false, false},
	} {
		if got := tc.m.Valid(); got != tc.valid {
			t.Errorf("%+v.Valid() = %v", tc.m, got)
		}
		if got := tc.m.Matches(id); got != tc.hit {
			t.Errorf("%+v.Matches(%+v) = %v", tc.m, id, got)
		}
		if tc.m.Matches(anon) {
			t.Errorf("%+v matches an identity with no booking, subject or token", tc.m)
		}
	}
}
