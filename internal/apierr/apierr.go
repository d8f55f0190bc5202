// Package apierr writes the JSON error responses of every HTTP endpoint:
//
//	{"error": {"code": "token_expired", "message": "token has expired"}}
//
// Codes are stable identifiers for programs; messages are for people and
// never contain secrets (tokens, codes).
package apierr

import (
	"encoding/json"
	"net/http"
)

// Error is an HTTP error with a stable code.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// New returns an *Error. code is a wire.ErrorCode (pkg/wire: the codes of
// the relay's endpoints, which clients branch on) or a plain string (the
// codes an API documents for itself).
func New[Code ~string](status int, code Code, message string) *Error {
	return &Error{Status: status, Code: string(code), Message: message}
}

// Write sends e as the JSON error response.
func Write(w http.ResponseWriter, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(struct {
		Error *Error `json:"error"`
	}{e})
}

// WriteNew is shorthand for Write(w, New(status, code, message)).
func WriteNew[Code ~string](w http.ResponseWriter, status int, code Code, message string) {
	Write(w, New(status, code, message))
}

// WriteJSON sends v as a JSON response with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
