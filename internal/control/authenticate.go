package control

import (
	"errors"
	"net/http"

	"switchboard/internal/access"
	"switchboard/internal/apierr"
	"switchboard/internal/auth"
)

// Authenticator checks the bearer token of an API request: signature,
// audience and times (Verifier), then the revocations. The control API, the
// jobs API and the dashboard's API share one, so that a revoked token is
// refused by every API alike.
type Authenticator struct {
	Verifier    *auth.Verifier
	Revocations *Revocations
}

// Authenticate returns the request's verified claims, or the error to
// answer: 401 for a missing, malformed or invalid token, 403 for a revoked
// one.
func (a *Authenticator) Authenticate(r *http.Request) (*auth.Claims, *apierr.Error) {
	tok, e := access.BearerToken(r)
	if e != nil {
		return nil, e
	}
	c, err := a.Verifier.Verify(tok)
	if err != nil {
		var ae *auth.Error
		if errors.As(err, &ae) {
			return nil, apierr.New(http.StatusUnauthorized, ae.Code, ae.Message)
		}
		return nil, apierr.New(http.StatusUnauthorized, auth.CodeMalformed, "token rejected")
	}
	if kind, denied := a.Revocations.Denied(c.BookingID, c.Subject, c.ID); denied {
		return nil, apierr.New(http.StatusForbidden, "token_revoked", "this token has been revoked ("+kind+")")
	}
	return c, nil
}
