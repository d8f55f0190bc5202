package relay

// Identity names whom a connection belongs to: the booking, subject and id
// of the token that opened it. Any of them may be empty. It is part of Info,
// and of every grant or session another package keeps for a connection of
// its own (pending one-time codes, shell sessions waiting for their host,
// agent control channels, dashboard sessions), so that one IdentityMatch
// finds all of them.
type Identity struct {
	BookingID string
	Subject   string
	TokenID   string
}

// IdentityKind names the part of an Identity an IdentityMatch compares. The
// values are those of a revocation's kind (internal/store's RevocationKind
// and the revocations API).
type IdentityKind string

// The kinds of IdentityMatch.
const (
	IdentityBooking IdentityKind = "booking" // Identity.BookingID
	IdentitySubject IdentityKind = "subject" // Identity.Subject
	IdentityToken   IdentityKind = "token"   // Identity.TokenID
)

// IdentityMatch matches the identities whose Kind part equals Value: what
// one revocation covers. It is a comparable value, so it can be logged,
// sent and compared. An unknown Kind or an empty Value matches nothing (an
// empty booking id must not match every connection without a booking).
type IdentityMatch struct {
	Kind  IdentityKind
	Value string
}

// Valid reports whether m can match anything: a known Kind and a Value.
func (m IdentityMatch) Valid() bool {
	switch m.Kind {
	case IdentityBooking, IdentitySubject, IdentityToken:
		return m.Value != ""
	}
	return false
}

// Matches reports whether id is covered by m.
func (m IdentityMatch) Matches(id Identity) bool {
	if m.Value == "" {
		return false
	}
	switch m.Kind {
	case IdentityBooking:
		return id.BookingID == m.Value
	case IdentitySubject:
		return id.Subject == m.Value
	case IdentityToken:
		return id.TokenID == m.Value
	}
	return false
}
