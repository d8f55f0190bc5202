package web

// Static files: the style sheet, the icon and the JavaScript modules,
// embedded in the binary.
//
// Each file is served at two URLs:
//
//   - /ui/static/v-<version>/<path>: immutable, cached for a year. The
//     version is a hash of every static file, so any change to any file
//     moves every URL; a module's relative imports ("./live.js") stay
//     inside the same version. The pages use these (pageData.Asset).
//   - /ui/static/<path>: revalidated on every use (ETag). The login and
//     error pages link the style sheet this way.

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
)

//go:embed static
var staticFiles embed.FS

// staticFile is one embedded file, ready to serve.
type staticFile struct {
	body        []byte
	contentType string
	etag        string
}

// staticSet is every static file by its path under static/, and the
// version of the set.
type staticSet struct {
	files   map[string]staticFile
	version string
}

var staticTypes = map[string]string{
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".json": "application/json",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".txt":  "text/plain; charset=utf-8",
}

var loadStatic = sync.OnceValue(func() *staticSet {
	set := &staticSet{files: map[string]staticFile{}}
	all := sha256.New()
	// WalkDir visits in lexical order: the version is stable.
	err := fs.WalkDir(staticFiles, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFiles.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		sum := sha256.Sum256(b)
		ct := staticTypes[path.Ext(name)]
		if ct == "" {
			ct = "application/octet-stream"
		}
		set.files[name] = staticFile{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		all.Write([]byte(name))
		all.Write(sum[:])
		return nil
	})
	if err != nil {
		panic("web: embedded static files: " + err.Error()) // embedded at build time: cannot happen
	}
	set.version = hex.EncodeToString(all.Sum(nil)[:6])
	return set
})

// staticVersion is the version segment of the immutable static URLs.
func staticVersion() string { return "v-" + loadStatic().version }

// staticURL returns the immutable URL path of a static file ("app.css").
func staticURL(name string) string { return "/ui/static/" + staticVersion() + "/" + name }

// serveStatic serves GET /ui/static/{path...}.
func serveStatic(w http.ResponseWriter, r *http.Request) {
	set := loadStatic()
	p := r.PathValue("path")
	immutable := false
	if v, rest, ok := strings.Cut(p, "/"); ok && strings.HasPrefix(v, "v-") {
		// An old version (a page rendered before an upgrade) still gets
		// today's file, but not for keeps.
		immutable = v == staticVersion()
		p = rest
	}
	f, ok := set.files[p]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", f.contentType)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("ETag", f.etag)
	if immutable {
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hd.Set("Cache-Control", "no-cache")
	}
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, f.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(f.body)
	}
}

func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}
