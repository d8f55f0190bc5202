// Package apispec holds the OpenAPI 3.1 description of Switchboard's HTTP
// API (openapi.yaml, embedded) and serves it as JSON at Path. The
// description is kept true by tests: the test harnesses of internal/server,
// internal/servertest and internal/control check every request their tests
// make, and every answer, against it (apispec/apispectest), and a test
// checks that every route the server registers is described. See
// docs/api.md.
package apispec

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/switchboard-hub/switchboard/internal/apierr"
)

// Path is where a node serves the description.
const Path = "/api/openapi.json"

//go:embed openapi.yaml
var source []byte

// YAML returns the description as written.
func YAML() []byte { return source }

// JSON returns the description as JSON (converted once from the YAML).
// The embedded file is checked by the package's tests, so an error here
// means a broken build.
var JSON = sync.OnceValues(func() ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(source, &doc); err != nil {
		return nil, fmt.Errorf("apispec: openapi.yaml: %w", err)
	}
	doc, err := jsonable(doc)
	if err != nil {
		return nil, fmt.Errorf("apispec: openapi.yaml: %w", err)
	}
	return json.Marshal(doc)
})

// jsonable turns what yaml.Unmarshal gives into values encoding/json
// takes: mappings with string keys only.
func jsonable(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			v[k] = j
		}
		return v, nil
	case map[any]any:
		return nil, fmt.Errorf("a mapping with a key that is not a string")
	case []any:
		for i, e := range v {
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			v[i] = j
		}
		return v, nil
	}
	return v, nil
}

// Handler serves the JSON description (GET; HEAD through the server's mux).
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := JSON()
		if err != nil {
			// The tests load the embedded file; this cannot happen in a
			// tested build, but a server must not panic on it.
			apierr.WriteNew(w, http.StatusInternalServerError, "internal", "the API description does not load")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(b)
	})
}
