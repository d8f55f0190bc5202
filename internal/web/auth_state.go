package web

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"golang.org/x/oauth2"
)

// loginState is what the browser keeps, encrypted in the sb_login cookie,
// between leaving for the identity provider and coming back to the
// callback.
type loginState struct {
	Provider string `json:"p"`           // "oidc" or "github"
	State    string `json:"s"`           // OAuth state, 128 bits
	Nonce    string `json:"n,omitempty"` // OIDC nonce, 128 bits
	Verifier string `json:"v"`           // PKCE code verifier
	Next     string `json:"x"`           // page to land on
	Expires  int64  `json:"e"`           // unix seconds
}

// loginCookiePath scopes the sb_login cookie to the callbacks.
func (h *Handler) loginCookiePath() string { return h.path("/auth/") }

// beginLogin creates the state of a login with provider and gives it to
// the browser.
func (h *Handler) beginLogin(w http.ResponseWriter, provider, next string) loginState {
	ls := loginState{
		Provider: provider,
		State:    randomID(16),
		Nonce:    randomID(16),
		Verifier: oauth2.GenerateVerifier(),
		Next:     nextOrDefault(next),
		Expires:  h.cfg.Now().Add(LoginStateTTL).Unix(),
	}
	b, _ := json.Marshal(ls)
	http.SetCookie(w, &http.Cookie{
		Name:     LoginCookie,
		Value:    h.sealer.Seal(LoginCookie, b),
		Path:     h.loginCookiePath(),
		MaxAge:   int(LoginStateTTL / time.Second),
		HttpOnly: true,
		Secure:   h.secure,
		// Lax: the cookie comes back on the provider's top-level redirect
		// to the callback, and on nothing cross-site that could post.
		SameSite: http.SameSiteLaxMode,
	})
	return ls
}

// Reasons a callback is refused.
var (
	errNoLoginState  = errors.New("this login was not started from this browser, or took longer than 10 minutes")
	errStateMismatch = errors.New("the state parameter does not match the login started from this browser")
)

// takeLoginState reads and clears the login state of the request and
// checks the callback's state parameter against it. The state is single
// use: whatever the outcome, the cookie is cleared.
func (h *Handler) takeLoginState(w http.ResponseWriter, r *http.Request, provider string) (loginState, error) {
	var ls loginState
	ck, err := r.Cookie(LoginCookie)
	if err != nil || ck.Value == "" {
		return ls, errNoLoginState
	}
	h.clearCookie(w, LoginCookie, h.loginCookiePath())
	b, err := h.sealer.Open(LoginCookie, ck.Value)
	if err != nil || json.Unmarshal(b, &ls) != nil || ls.Provider != provider || ls.State == "" {
		return loginState{}, errNoLoginState
	}
	if h.cfg.Now().Unix() > ls.Expires {
		return loginState{}, errNoLoginState
	}
	got := r.URL.Query().Get("state")
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(ls.State)) != 1 {
		return loginState{}, errStateMismatch
	}
	return ls, nil
}

// beginCallback does what every provider's callback does first: it answers
// a provider's error, takes the login state (refusing a wrong, missing or
// stale one) and the code. ok is false when it has answered the request.
// who names the provider in messages ("GitHub").
func (h *Handler) beginCallback(w http.ResponseWriter, r *http.Request, provider, who string) (ls loginState, code string, ok bool) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		h.clearCookie(w, LoginCookie, h.loginCookiePath())
		h.renderAuthError(w, http.StatusBadRequest, "Login refused",
			who+" did not let you in: "+truncateMsg(e+" "+q.Get("error_description"), 200))
		return loginState{}, "", false
	}
	ls, err := h.takeLoginState(w, r, provider)
	if err != nil {
		h.log.Info("web: login callback refused", "provider", provider, "reason", err.Error())
		h.renderAuthError(w, http.StatusBadRequest, "Login refused", "Login refused: "+err.Error()+". Please sign in again.")
		return loginState{}, "", false
	}
	if code = q.Get("code"); code == "" {
		h.renderAuthError(w, http.StatusBadRequest, "Login refused", "Login refused: the callback carries no code. Please sign in again.")
		return loginState{}, "", false
	}
	return ls, code, true
}
