package control

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/wire"
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
	return a.verify(tok)
}

// verify checks a token taken from a request: signature, audience and
// times, then the revocations.
func (a *Authenticator) verify(tok string) (*auth.Claims, *apierr.Error) {
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

// maxBasicUserBytes bounds the user name of HTTP Basic credentials: it is
// not checked, only carried beside the token.
const maxBasicUserBytes = 256

// AuthenticateBearerOrBasic is Authenticate that also accepts HTTP Basic
// credentials whose password is an API token, for clients that cannot send
// a bearer header (TOPCAT, STILTS, `curl -u user:TOKEN`). The user name is
// not checked: any name, the token's subject for instance, is accepted; the
// token alone decides, exactly as if it had come as a bearer token (same
// verification, revocations, scopes). It is meant for the jobs API only:
// other APIs keep Authenticate (least privilege; a browser never caches
// Basic credentials for them).
//
// No secret is compared here (the token's signature check is the
// verifier's, in constant time), and neither the header nor the token is
// logged or echoed in an error.
func (a *Authenticator) AuthenticateBearerOrBasic(r *http.Request) (*auth.Claims, *apierr.Error) {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return a.Authenticate(r) // none or several: its answer
	}
	scheme, _, _ := strings.Cut(vals[0], " ")
	if !strings.EqualFold(scheme, "Basic") {
		return a.Authenticate(r)
	}
	if len(vals[0]) > len("Basic ")+base64.StdEncoding.EncodedLen(auth.MaxTokenBytes+maxBasicUserBytes) {
		return nil, apierr.New(http.StatusBadRequest, wire.ErrorAuthorizationTooLarge, "Authorization header too long")
	}
	_, password, ok := r.BasicAuth()
	if !ok {
		return nil, apierr.New(http.StatusBadRequest, wire.ErrorMalformedAuthorization, "want Authorization: Basic base64(user:token)")
	}
	if password == "" {
		return nil, apierr.New(http.StatusUnauthorized, wire.ErrorMissingToken, "HTTP Basic credentials need an API token as the password")
	}
	return a.verify(password)
}
