package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// GitHub's endpoints, the defaults of GitHubConfig.
const (
	GitHubAuthURL  = "https://github.com/login/oauth/authorize"
	GitHubTokenURL = "https://github.com/login/oauth/access_token"
	GitHubAPIURL   = "https://api.github.com"
)

// GitHubConfig configures login with GitHub: OAuth (an OAuth app), then
// GitHub's user API for the login and organisations, not OpenID Connect.
type GitHubConfig struct {
	// ClientID and ClientSecret are the OAuth app's. Required.
	ClientID, ClientSecret string
	// RedirectURL is the app's callback URL (default PublicURL +
	// "/auth/github/callback").
	RedirectURL string
	// AllowLogins and AllowOrgs are who may log in: these logins, and the
	// members of these organisations (compared without case). At least
	// one must be set.
	AllowLogins, AllowOrgs []string
	// Admins and Operators are logins given those roles; every other
	// allowed user is a viewer.
	Admins, Operators []string
	// AuthURL, TokenURL and APIURL override GitHub's endpoints (tests,
	// GitHub Enterprise Server). Empty: github.com's.
	AuthURL, TokenURL, APIURL string
}

type githubProvider struct {
	h      *Handler
	cfg    GitHubConfig
	oauth  *oauth2.Config
	apiURL *url.URL
}

func newGitHubProvider(h *Handler, cfg GitHubConfig) (*githubProvider, error) {
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("web: GitHub login needs a client id and a client secret")
	}
	if len(cfg.AllowLogins)+len(cfg.AllowOrgs) == 0 {
		return nil, errors.New("web: GitHub login needs an allowlist of logins or organisations; without one every GitHub user would get in")
	}
	if cfg.AuthURL == "" {
		cfg.AuthURL = GitHubAuthURL
	}
	if cfg.TokenURL == "" {
		cfg.TokenURL = GitHubTokenURL
	}
	if cfg.APIURL == "" {
		cfg.APIURL = GitHubAPIURL
	}
	api, err := url.Parse(strings.TrimSuffix(cfg.APIURL, "/"))
	if err != nil || (api.Scheme != "https" && api.Scheme != "http") || api.Host == "" {
		return nil, fmt.Errorf("web: GitHub API URL %q: want an http(s) URL", cfg.APIURL)
	}
	redirect := cfg.RedirectURL
	if redirect == "" {
		redirect = strings.TrimSuffix(h.cfg.PublicURL.String(), "/") + "/auth/github/callback"
	}
	return &githubProvider{h: h, cfg: cfg, apiURL: api, oauth: &oauth2.Config{
		ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, RedirectURL: redirect,
		Endpoint: oauth2.Endpoint{AuthURL: cfg.AuthURL, TokenURL: cfg.TokenURL},
		Scopes:   []string{"read:org"},
	}}, nil
}

func (g *githubProvider) serveLogin(w http.ResponseWriter, r *http.Request) {
	ls := g.h.beginLogin(w, "github", r.URL.Query().Get("next"))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, g.oauth.AuthCodeURL(ls.State, oauth2.S256ChallengeOption(ls.Verifier)), http.StatusSeeOther)
}

// githubUser is the part of GET /user we use.
type githubUser struct {
	Login string `json:"login"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

func (g *githubProvider) serveCallback(w http.ResponseWriter, r *http.Request) {
	h := g.h
	ls, code, ok := h.beginCallback(w, r, "github", "GitHub")
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), oauth2.HTTPClient, h.cfg.HTTPClient), 30*time.Second)
	defer cancel()
	tok, err := g.oauth.Exchange(ctx, code, oauth2.VerifierOption(ls.Verifier))
	if err != nil {
		status, msg := exchangeFailure(err)
		h.log.Warn("web: GitHub code exchange failed", "err", err)
		h.renderAuthError(w, status, "Login failed", strings.ReplaceAll(msg, "identity provider", "GitHub"))
		return
	}
	var u githubUser
	if err := g.get(ctx, tok.AccessToken, "/user", &u); err != nil || u.Login == "" {
		if err == nil {
			err = errors.New("no login in the answer")
		}
		h.log.Warn("web: GitHub user API failed", "err", err)
		h.renderAuthError(w, http.StatusBadGateway, "GitHub unreachable", "GitHub's user API could not be read ("+shortError(err)+"). Try again in a moment.")
		return
	}
	allowed := containsFold(g.cfg.AllowLogins, u.Login)
	if !allowed && len(g.cfg.AllowOrgs) > 0 {
		orgs, err := g.orgs(ctx, tok.AccessToken)
		if err != nil {
			h.log.Warn("web: GitHub organisations API failed", "err", err)
			h.renderAuthError(w, http.StatusBadGateway, "GitHub unreachable", "Your GitHub organisations could not be read ("+shortError(err)+"). Try again in a moment.")
			return
		}
		allowed = slices.ContainsFunc(orgs, func(o string) bool { return containsFold(g.cfg.AllowOrgs, o) })
	}
	if !allowed {
		h.log.Info("web: GitHub login denied", "login", u.Login)
		h.renderDenied(w, r, fmt.Sprintf("The GitHub account %s is not on this server's allowlist (of logins, or members of allowed organisations). If you are a member of an allowed organisation, the organisation may not have granted this app access.", u.Login), nil)
		return
	}
	id := identity{Subject: "github:" + u.Login, Name: u.Name, Email: u.Email, Provider: "github", Role: RoleViewer}
	if id.Name == "" {
		id.Name = u.Login
	}
	switch {
	case containsFold(g.cfg.Admins, u.Login):
		id.Role = RoleAdmin
	case containsFold(g.cfg.Operators, u.Login):
		id.Role = RoleOperator
	}
	h.startSession(w, r, id, ls.Next)
}

// maxGitHubOrgPages bounds how many pages of organisations are read.
const maxGitHubOrgPages = 10

// orgs lists the logins of the user's organisations.
func (g *githubProvider) orgs(ctx context.Context, token string) ([]string, error) {
	var out []string
	next := "/user/orgs?per_page=100"
	for page := 0; next != "" && page < maxGitHubOrgPages; page++ {
		var batch []struct {
			Login string `json:"login"`
		}
		link, err := g.getLink(ctx, token, next, &batch)
		if err != nil {
			return nil, err
		}
		for _, o := range batch {
			out = append(out, o.Login)
		}
		next = g.nextPage(link)
	}
	return out, nil
}

// nextPage returns the API path of the rel="next" link in a Link header,
// if it points into the API (the token is never sent elsewhere).
func (g *githubProvider) nextPage(link string) string {
	for _, part := range strings.Split(link, ",") {
		target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
		if !ok || !strings.Contains(params, `rel="next"`) {
			continue
		}
		u, err := url.Parse(strings.Trim(strings.TrimSpace(target), "<>"))
		if err != nil || u.Host != g.apiURL.Host || u.Scheme != g.apiURL.Scheme || !strings.HasPrefix(u.Path, g.apiURL.Path+"/") {
			return ""
		}
		p := strings.TrimPrefix(u.Path, g.apiURL.Path)
		if u.RawQuery != "" {
			p += "?" + u.RawQuery
		}
		return p
	}
	return ""
}

func (g *githubProvider) get(ctx context.Context, token, path string, v any) error {
	_, err := g.getLink(ctx, token, path, v)
	return err
}

// getLink GETs an API path with the user's token into v and returns the
// Link header.
func (g *githubProvider) getLink(ctx context.Context, token, path string, v any) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.apiURL.String()+path, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	resp, err := g.h.cfg.HTTPClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, 4<<20)
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, body)
		return "", fmt.Errorf("GET %s: %s", strings.SplitN(path, "?", 2)[0], resp.Status)
	}
	if err := json.NewDecoder(body).Decode(v); err != nil {
		return "", fmt.Errorf("GET %s: %w", strings.SplitN(path, "?", 2)[0], err)
	}
	return resp.Header.Get("Link"), nil
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(e string) bool { return strings.EqualFold(e, s) })
}
