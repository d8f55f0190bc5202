package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Token renewal (docs/host.md, "Token renewal"): the agent's control
// channel token is renewed through the hub's refresh endpoint when two
// thirds of its lifetime have passed, and the new token replaces the token
// file atomically (0600). Every link reads its token file on each connect,
// so the new token is used from the next connect: at the latest when the
// hub closes the channel at the old token's expiry (4001).
//
// The renewer re-reads the token file before each decision, so a token an
// operator drops in is renewed in its turn. A token the hub refuses to
// renew (revoked, past --max-refresh-lifetime, not refreshable) is left
// alone until the file holds another one.

const (
	// renewNum/renewDen is the part of a token's lifetime after which it
	// is renewed.
	renewNum, renewDen = 2, 3
	// renewCheckEvery is how often the token file is re-read while
	// nothing is due, so that a token dropped in is seen.
	renewCheckEvery = 30 * time.Second
	// renewTimeout bounds one refresh request.
	renewTimeout = 20 * time.Second
	// maxRenewAnswer bounds the refresh endpoint's answer.
	maxRenewAnswer = 64 << 10
)

// tokenRenewer renews the token held in file. run (or once, in tests)
// owns the fields below now.
type tokenRenewer struct {
	a    *Agent
	file string
	log  *slog.Logger
	now  func() time.Time

	bo          *backoff // retries of failed refreshes
	refused     string   // the token the hub refused to renew, or ""
	lastProblem string   // the last problem logged, so each is logged once
}

// renewRefused is a refresh the hub answered with a refusal that
// retrying cannot change (401, 403, 400).
type renewRefused struct {
	status int
	code   string
	msg    string
}

func (e *renewRefused) Error() string {
	return fmt.Sprintf("refresh refused: %d %s: %s", e.status, e.code, e.msg)
}

// run renews the token until ctx ends. Its waits are its own (the
// package's sleep), not the links' retry delays (Options.sleep).
func (r *tokenRenewer) run(ctx context.Context) {
	for ctx.Err() == nil {
		if !sleep(ctx, r.once(ctx)) {
			return
		}
	}
}

// problem logs a problem once until another one happens: the file is
// re-read every renewCheckEvery.
func (r *tokenRenewer) problem(ctx context.Context, level slog.Level, msg string, args ...any) {
	key := msg + fmt.Sprint(args...)
	if key != r.lastProblem {
		r.log.Log(ctx, level, msg, args...)
		r.lastProblem = key
	}
}

// once reads the token file, renews the token if it is due and returns
// how long to wait before looking again.
func (r *tokenRenewer) once(ctx context.Context) time.Duration {
	if r.bo == nil {
		r.bo = &backoff{p: r.a.backoff}
	}
	tok, err := readTokenFile(r.file)
	switch {
	case err != nil:
		r.problem(ctx, slog.LevelWarn, "token renewal: cannot read the token file", "error", err)
		return renewCheckEvery
	case tok == r.refused:
		return renewCheckEvery // until another token is put in the file
	}
	iat, exp, ok := tokenTimes(tok)
	if !ok {
		r.problem(ctx, slog.LevelInfo, "token renewal: the token has no iat or exp; it is not renewed", "file", r.file)
		return renewCheckEvery
	}
	now := r.now()
	due := iat.Add(exp.Sub(iat) * renewNum / renewDen)
	switch {
	case !now.Before(exp):
		r.problem(ctx, slog.LevelError, "token renewal: the token has expired; put a new one in the token file", "file", r.file, "expired", exp)
		r.refused = tok
		return renewCheckEvery
	case now.Before(due):
		return min(due.Sub(now), renewCheckEvery)
	}
	next, nextExp, err := r.refresh(ctx, tok)
	if ctx.Err() != nil {
		return 0
	}
	var rr *renewRefused
	switch {
	case errors.As(err, &rr):
		r.problem(ctx, slog.LevelError, "token renewal refused by the hub; the token is used until it expires; enrol the agent again",
			"status", rr.status, "code", rr.code, "message", rr.msg, "expires", exp)
		r.refused = tok
		return renewCheckEvery
	case err != nil:
		d := min(r.bo.next(), max(exp.Sub(now), time.Second))
		r.problem(ctx, slog.LevelWarn, "token renewal failed; retrying", "error", redact(err.Error()), "retry_in", d)
		return d
	}
	r.bo.reset()
	// An operator may have put another token in meanwhile: it wins.
	if cur, err := readTokenFile(r.file); err != nil || cur != tok {
		r.log.Info("token renewal: the token file changed while renewing; keeping the new file", "file", r.file)
		return 0
	}
	if err := writeTokenFile(r.file, next); err != nil {
		r.problem(ctx, slog.LevelError, "token renewal: cannot write the token file", "file", r.file, "error", err)
		return min(r.bo.next(), max(exp.Sub(now), time.Second))
	}
	r.lastProblem = ""
	r.log.Info("agent token renewed", "file", r.file, "expires", nextExp)
	return 0
}

// refresh trades tok for a renewed token at the hub's refresh endpoint.
func (r *tokenRenewer) refresh(ctx context.Context, tok string) (string, time.Time, error) {
	u, err := refreshURL(r.a.cfg.URL)
	if err != nil {
		return "", time.Time{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, renewTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return "", time.Time{}, err
	}
	for k, vs := range r.a.header {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := r.a.http.Do(req)
	if err != nil {
		return "", time.Time{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRenewAnswer))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("refresh: read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		switch resp.StatusCode {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
			return "", time.Time{}, &renewRefused{resp.StatusCode, e.Error.Code, e.Error.Message}
		}
		return "", time.Time{}, fmt.Errorf("refresh: status %d %s", resp.StatusCode, e.Error.Code)
	}
	var ok struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(body, &ok); err != nil || ok.Token == "" || strings.ContainsAny(ok.Token, " \t\r\n") {
		return "", time.Time{}, errors.New("refresh: the answer holds no token")
	}
	return ok.Token, ok.ExpiresAt, nil
}

// refreshURL is the refresh endpoint under the relay's base URL.
func refreshURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	u.RawQuery, u.Fragment = "", ""
	return strings.TrimSuffix(u.String(), "/") + wire.PathTokenRefresh, nil
}

// tokenTimes reads the iat and exp claims of a JWT without verifying it
// (the hub verifies; the agent only needs to know when to renew).
func tokenTimes(tok string) (iat, exp time.Time, ok bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, time.Time{}, false
	}
	var c struct {
		IssuedAt  *float64 `json:"iat"`
		ExpiresAt *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &c) != nil || c.IssuedAt == nil || c.ExpiresAt == nil || *c.ExpiresAt <= *c.IssuedAt {
		return time.Time{}, time.Time{}, false
	}
	return time.Unix(int64(*c.IssuedAt), 0), time.Unix(int64(*c.ExpiresAt), 0), true
}

// writeTokenFile replaces file with tok atomically: a reader sees the old
// token or the new one, never a part. The file is 0600.
func writeTokenFile(file, tok string) error {
	dir := filepath.Dir(file)
	f, err := os.CreateTemp(dir, "."+filepath.Base(file)+".renew-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.WriteString(tok + "\n")
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // the rename survives a crash; best effort
		d.Close()
	}
	return nil
}

// agentTokenRenewer renews the token of the agent control channel: the
// agent section's token file, or the top-level one.
func (a *Agent) agentTokenRenewer() *tokenRenewer {
	file := a.cfg.Agent.TokenFile
	if file == "" {
		file = a.cfg.TokenFile
	}
	return &tokenRenewer{a: a, file: file, log: a.log.With("stream", "agent"), now: time.Now}
}
