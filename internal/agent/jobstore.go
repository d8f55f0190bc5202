package agent

import (
	"context"
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
	"unicode/utf8"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
)

// storedResult is a finished run's result as kept in the state directory
// until the hub acknowledges it: the Result message (Files: every output
// file that may be uploaded) and where each file lies.
type storedResult struct {
	jobproto.Result
	// Paths maps each file of Files to its path, relative to the state
	// directory.
	Paths map[string]string `json:"paths,omitempty"`
}

// resultStore is the state directory:
//
//	results/{job}.json   a finished run's result, until acked
//	runs/{job}/output/   the run's output files ($SWITCHBOARD_OUTPUT), until acked
//	runs/{job}/work/     the run's working directory, while it runs
//	runs/{job}/result.json  $SWITCHBOARD_RESULT, read when it ends
type resultStore struct {
	dir string // absolute
	log *slog.Logger
}

func (s *resultStore) runDir(job string) string { return filepath.Join(s.dir, "runs", job) }

func (s *resultStore) resultFile(job string) string {
	return filepath.Join(s.dir, "results", job+".json")
}

// open creates the directories, loads the results not yet acknowledged,
// turns the runs the agent's end interrupted into results (recoverRun) and
// removes what else runs left behind.
func (s *resultStore) open() ([]*storedResult, error) {
	for _, d := range []string{s.dir, filepath.Join(s.dir, "results"), filepath.Join(s.dir, "runs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	release, err := lockStateDir(s.dir) // an agent running on it would lose its runs
	if err != nil {
		return nil, err
	}
	defer release()
	ents, err := os.ReadDir(filepath.Join(s.dir, "results"))
	if err != nil {
		return nil, err
	}
	var out []*storedResult
	known := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(s.dir, "results", name)
		if strings.HasPrefix(name, ".") { // a temporary file of an interrupted save
			os.Remove(p)
			continue
		}
		job, ok := strings.CutSuffix(name, ".json")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(p)
		var r storedResult
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err == nil && r.Job != job {
			err = fmt.Errorf("holds job %q", r.Job)
		}
		if err != nil {
			s.log.Error("stored result unreadable; moved aside", "file", p, "error", err)
			os.Rename(p, p+".bad")
			continue
		}
		known[job] = true
		out = append(out, &r)
	}
	runs, err := os.ReadDir(filepath.Join(s.dir, "runs"))
	if err != nil {
		return nil, err
	}
	for _, e := range runs {
		job := e.Name()
		if known[job] {
			continue
		}
		if r := s.recoverRun(job); r != nil {
			if err := s.save(r); err != nil {
				return nil, fmt.Errorf("store the interrupted run %s: %w", job, err)
			}
			out = append(out, r)
		} else {
			s.log.Warn("removing the directory of a run that never started", "job", job)
		}
		os.RemoveAll(filepath.Join(s.dir, "runs", job))
	}
	return out, nil
}

// save writes r atomically: a temporary file, fsync, rename, fsync of the
// directory.
func (s *resultStore) save(r *storedResult) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.dir, "results")
	f, err := os.CreateTemp(dir, "."+r.Job+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), s.resultFile(r.Job))
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// remove forgets an acknowledged result and its files.
func (s *resultStore) remove(job string) {
	if err := os.Remove(s.resultFile(job)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("could not remove a stored result", "job", job, "error", err)
	}
	if err := os.RemoveAll(s.runDir(job)); err != nil {
		s.log.Warn("could not remove a run's directory", "job", job, "error", err)
	}
}

// uploadFiles uploads r's files within the hub's limits and returns the
// Result message to send: the files uploaded, and notes in Error for those
// that were not. gone reports that the hub no longer knows the job (404);
// err a failure worth retrying (network, 401, 403, 5xx…).
func (j *jobAgent) uploadFiles(ctx context.Context, r *storedResult) (msg *jobproto.Result, gone bool, err error) {
	m := r.Result
	m.Files = nil
	maxFile, maxRun := j.limits()
	var notes []string
	var total int64
	for _, f := range r.Files {
		if maxFile > 0 && f.Size > maxFile {
			notes = append(notes, fmt.Sprintf("%s not uploaded: %d bytes, above the hub's max_file_bytes %d", f.Name, f.Size, maxFile))
			continue
		}
		if maxRun > 0 && total+f.Size > maxRun {
			notes = append(notes, fmt.Sprintf("%s not uploaded: the run's files would exceed the hub's max_run_bytes %d", f.Name, maxRun))
			continue
		}
		rel, ok := r.Paths[f.Name]
		if !ok || filepath.IsAbs(rel) || !filepath.IsLocal(rel) {
			notes = append(notes, f.Name+" not uploaded: no path in the stored result")
			continue
		}
		status, body, err := j.putFile(ctx, r.Job, f, filepath.Join(j.store.dir, rel))
		switch {
		case errors.Is(err, os.ErrNotExist):
			notes = append(notes, f.Name+" not uploaded: the file is gone from the state directory")
			continue
		case err != nil:
			return nil, false, fmt.Errorf("upload %s: %w", f.Name, err)
		}
		switch status {
		case http.StatusCreated, http.StatusConflict: // stored, or the run already has its result
			m.Files = append(m.Files, f)
			total += f.Size
		case http.StatusNotFound:
			return nil, true, nil
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			notes = append(notes, fmt.Sprintf("%s not uploaded: the hub answered %d %s", f.Name, status, body))
		default:
			return nil, false, fmt.Errorf("upload %s: the hub answered %d %s", f.Name, status, body)
		}
	}
	m.Error = joinNotes(m.Error, notes)
	return &m, false, nil
}

// putFile uploads one file: PUT {url}/api/v1/jobs/{job}/runs/{agent}/files/{name}.
// It returns the status and a short text of the answer's body.
func (j *jobAgent) putFile(ctx context.Context, job string, f jobproto.File, path string) (int, string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer fh.Close()
	tok, err := readTokenFile(j.link.tokenFile)
	if err != nil {
		return 0, "", err
	}
	u, err := j.fileURL(job, f.Name)
	if err != nil {
		return 0, "", err
	}
	var body io.Reader = http.NoBody
	if f.Size > 0 {
		body = io.LimitReader(fh, f.Size)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, body)
	if err != nil {
		return 0, "", err
	}
	req.ContentLength = f.Size
	for k, vs := range j.a.header {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("X-Content-SHA256", f.SHA256)
	resp, err := j.a.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, shortBody(b), nil
}

// fileURL is the upload URL of a run's file, under the relay's base URL.
func (j *jobAgent) fileURL(job, name string) (string, error) {
	u, err := url.Parse(j.a.cfg.URL)
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
	return strings.TrimSuffix(u.String(), "/") + "/api/v1/jobs/" + url.PathEscape(job) + "/runs/" +
		url.PathEscape(j.cfg.ID) + "/files/" + url.PathEscape(name), nil
}

// shortBody is an error answer's message for a note: the JSON error's
// message if it is one, else the text, cut.
func shortBody(b []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	s := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && (e.Error.Code != "" || e.Error.Message != "") {
		s = strings.TrimSpace(e.Error.Code + ": " + e.Error.Message)
	}
	if len(s) > 200 {
		s = headString(s, 200) + "…"
	}
	return s
}

// maxErrorBytes bounds a result's error text.
const maxErrorBytes = 4 << 10

// joinNotes appends notes to an error text, "; "-separated, within
// maxErrorBytes.
func joinNotes(err string, notes []string) string {
	all := make([]string, 0, len(notes)+1)
	if err != "" {
		all = append(all, err)
	}
	all = append(all, notes...)
	s := strings.Join(all, "; ")
	if len(s) > maxErrorBytes {
		s = headString(s, maxErrorBytes-3) + "…"
	}
	return s
}

// headString returns at most n bytes of the start of s, cut on a character
// boundary.
func headString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// tailString returns at most n bytes of the end of s, cut on a character
// boundary.
func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := len(s) - n
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return s[i:]
}
