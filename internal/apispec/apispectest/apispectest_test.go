package apispectest

import "testing"

// TestLoad: the description loads and is valid OpenAPI (kin-openapi's
// validation of a 3.1 document).
func TestLoad(t *testing.T) {
	d, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if d.Doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q", d.Doc.OpenAPI)
	}
	if len(d.Patterns()) < 20 {
		t.Errorf("%d operations", len(d.Patterns()))
	}
}
