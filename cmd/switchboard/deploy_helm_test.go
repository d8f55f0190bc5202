package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/switchboard-hub/switchboard/internal/servertest"
)

// kubernetesVersion is the Kubernetes release whose OpenAPI description
// (the k8s.io/kubernetes module, api/openapi-spec/v3) the rendered
// manifests are validated against. helm and kubeconform are pinned in
// deploy/tools.txt.
const kubernetesVersion = "v1.36.3"

// manifest is one rendered Kubernetes object, decoded loosely.
type manifest map[string]any

func (m manifest) kind() string { s, _ := m["kind"].(string); return s }
func (m manifest) name() string { s, _ := dig(m, "metadata", "name").(string); return s }

// dig walks maps and lists by key or index. (The YAML decoder makes
// every mapping inside a manifest a manifest too.)
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			switch m := v.(type) {
			case manifest:
				v = m[k]
			case map[string]any:
				v = m[k]
			default:
				return nil
			}
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// TestHelmChart lints deploy/helm/switchboard, renders it in both modes
// (ci/single-values.yaml, ci/cluster-values.yaml), validates every
// rendered object with kubeconform against the Kubernetes release's own
// schemas (strict: unknown fields fail), checks what each mode must
// contain, and has HAProxy check the configuration rendered for a cluster.
func TestHelmChart(t *testing.T) {
	helm := goTool(t, "helm")
	kubeconform := goTool(t, "kubeconform")
	haproxy := servertest.Tool(t, "haproxy", "haproxy")
	chart := filepath.Join(moduleRoot(t), "deploy", "helm", "switchboard")
	schemas := kubernetesSchemas(t)

	render := func(t *testing.T, values string) (string, []manifest) {
		t.Helper()
		runTool(t, "", helm, "lint", "--strict", chart, "-f", filepath.Join(chart, "ci", values))
		out := runTool(t, "", helm, "template", "sb", chart, "--namespace", "relay", "-f", filepath.Join(chart, "ci", values))
		var objs []manifest
		dec := yaml.NewDecoder(strings.NewReader(out))
		for {
			var m manifest
			if err := dec.Decode(&m); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("helm template: %v", err)
			}
			if m != nil {
				objs = append(objs, m)
			}
		}
		file := filepath.Join(t.TempDir(), "rendered.yaml")
		if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		schemas.write(t, objs)
		runTool(t, "", kubeconform, "-strict", "-summary", "-schema-location", schemas.location(), file)
		return out, objs
	}
	find := func(t *testing.T, objs []manifest, kind, name string) manifest {
		t.Helper()
		for _, m := range objs {
			if m.kind() == kind && m.name() == name {
				return m
			}
		}
		t.Fatalf("no %s %s rendered", kind, name)
		return nil
	}
	probes := func(t *testing.T, sts manifest) {
		t.Helper()
		c := dig(sts, "spec", "template", "spec", "containers", 0)
		for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"} {
			if got := dig(c, probe, "httpGet", "path"); got != path {
				t.Errorf("%s path %v, want %s", probe, got, path)
			}
		}
	}
	env := func(sts manifest) map[string]string {
		vars := map[string]string{}
		list, _ := dig(sts, "spec", "template", "spec", "containers", 0, "env").([]any)
		for _, e := range list {
			name, _ := dig(e, "name").(string)
			value, _ := dig(e, "value").(string)
			if ref, _ := dig(e, "valueFrom", "secretKeyRef", "name").(string); ref != "" {
				value = "secret:" + ref
			}
			vars[name] = value
		}
		return vars
	}

	t.Run("kubeconform rejects", func(t *testing.T) {
		// The schemas are strict: a misspelt field fails (so the checks
		// below can fail).
		bad := "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  prots: []\n"
		file := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		schemas.write(t, []manifest{{"apiVersion": "v1", "kind": "Service"}})
		out, err := exec.Command(kubeconform, "-strict", "-schema-location", schemas.location(), file).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "prots") {
			t.Fatalf("kubeconform accepted spec.prots: %v\n%s", err, out)
		}
	})

	t.Run("single node", func(t *testing.T) {
		_, objs := render(t, "single-values.yaml")
		sts := find(t, objs, "StatefulSet", "sb-switchboard")
		if r := dig(sts, "spec", "replicas"); r != 1 {
			t.Errorf("replicas %v, want 1", r)
		}
		if claim := dig(sts, "spec", "volumeClaimTemplates", 0, "metadata", "name"); claim != "data" {
			t.Errorf("no data volume claim (SQLite on a PVC): %v", claim)
		}
		vars := env(sts)
		if vars["SWITCHBOARD_DATA_DIR"] != "/var/lib/switchboard" || vars["SWITCHBOARD_CLUSTER_LISTEN"] != "" || vars["SWITCHBOARD_DATABASE_URL"] != "" {
			t.Errorf("a single node's environment: %v", vars)
		}
		probes(t, sts)
		find(t, objs, "ConfigMap", "sb-switchboard-config")
		if ing := find(t, objs, "Ingress", "sb-switchboard"); dig(ing, "spec", "rules", 0, "http", "paths", 0, "backend", "service", "name") != "sb-switchboard" {
			t.Errorf("the ingress does not lead to the node's service")
		}
	})

	t.Run("cluster", func(t *testing.T) {
		_, objs := render(t, "cluster-values.yaml")
		sts := find(t, objs, "StatefulSet", "sb-switchboard")
		if r := dig(sts, "spec", "replicas"); r != 3 {
			t.Errorf("replicas %v, want 3", r)
		}
		if dig(sts, "spec", "volumeClaimTemplates") != nil {
			t.Errorf("a cluster's nodes keep no volume (PostgreSQL holds everything)")
		}
		probes(t, sts)
		vars := env(sts)
		headless := find(t, objs, "Service", "sb-switchboard-nodes")
		if dig(headless, "spec", "clusterIP") != "None" || dig(headless, "spec", "publishNotReadyAddresses") != true {
			t.Errorf("the nodes' service is not headless with not-ready addresses: %v", dig(headless, "spec"))
		}
		var peers []string
		for i := range 3 {
			peers = append(peers, fmt.Sprintf("sb-switchboard-%d.sb-switchboard-nodes.relay.svc.cluster.local:6222", i))
		}
		for name, want := range map[string]string{
			"SWITCHBOARD_CLUSTER_PEER":   strings.Join(peers, ","),
			"SWITCHBOARD_CLUSTER_LISTEN": "$(POD_IP):6222",
			"SWITCHBOARD_NODE_ID":        "$(POD_NAME)",
			"SWITCHBOARD_DATABASE_URL":   "secret:switchboard-postgres",
			"SWITCHBOARD_PUBLIC_URL":     "https://relay.example.org",
			"SWITCHBOARD_TRUSTED_PROXY":  "10.244.0.0/16",
		} {
			if vars[name] != want {
				t.Errorf("%s = %q, want %q", name, vars[name], want)
			}
		}
		if pdb := find(t, objs, "PodDisruptionBudget", "sb-switchboard"); dig(pdb, "spec", "maxUnavailable") != 1 {
			t.Errorf("the nodes' disruption budget: %v", dig(pdb, "spec"))
		}
		if ing := find(t, objs, "Ingress", "sb-switchboard"); dig(ing, "spec", "rules", 0, "http", "paths", 0, "backend", "service", "name") != "sb-switchboard-haproxy" {
			t.Errorf("the ingress does not lead to HAProxy")
		}
		find(t, objs, "Deployment", "sb-switchboard-haproxy")

		// HAProxy's configuration: valid, and routing each node's codes
		// (suffix = node id = pod name) to that node.
		cfg, _ := dig(find(t, objs, "ConfigMap", "sb-switchboard-haproxy"), "data", "haproxy.cfg").(string)
		for i := range 3 {
			node := fmt.Sprintf("sb-switchboard-%d", i)
			if !strings.Contains(cfg, "use-server "+node+" if { var(txn.code_node) -m str "+node+" }") ||
				!regexp.MustCompile(`(?m)^\s*server `+node+` `+node+`\.sb-switchboard-nodes\.relay\.svc\.cluster\.local:8080$`).MatchString(cfg) {
				t.Errorf("haproxy.cfg does not route %s's codes to it:\n%s", node, cfg)
			}
		}
		file := filepath.Join(t.TempDir(), "haproxy.cfg")
		if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		runTool(t, "", haproxy, "-c", "-f", file)
	})

	t.Run("cluster without a database", func(t *testing.T) {
		out, err := exec.Command(helm, "template", "sb", chart, "--set", "cluster.enabled=true", "--set", "publicURL=https://relay.example.org").CombinedOutput()
		if err == nil || !bytes.Contains(out, []byte("cluster.database.existingSecret")) {
			t.Errorf("cluster mode without a database rendered: %v\n%s", err, out)
		}
	})
}

// k8sSchemas turns the Kubernetes release's OpenAPI v3 description into
// the per-kind JSON schemas kubeconform reads.
type k8sSchemas struct {
	specDir string // api/openapi-spec/v3 of the k8s.io/kubernetes module
	dir     string // where the schemas are written
}

// kubernetesSchemas fetches the k8s.io/kubernetes module (its OpenAPI
// description) through the module proxy, or skips the test (fails under
// SWITCHBOARD_TEST_STRICT=1) when it cannot.
func kubernetesSchemas(t *testing.T) *k8sSchemas {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes@"+kubernetesVersion)
	cmd.Dir = t.TempDir() // outside the module: its go.mod is not touched
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if err == nil {
		err = json.Unmarshal(out, &mod)
	}
	if err != nil || mod.Dir == "" {
		msg := fmt.Sprintf("go mod download k8s.io/kubernetes@%s: %v %s %s", kubernetesVersion, err, mod.Error, stderr.String())
		if os.Getenv(servertest.EnvStrict) == "1" {
			t.Fatal(msg + "; " + servertest.EnvStrict + "=1 forbids skipping")
		}
		t.Skip(msg + " (set " + servertest.EnvStrict + "=1 to fail instead)")
	}
	return &k8sSchemas{specDir: filepath.Join(mod.Dir, "api", "openapi-spec", "v3"), dir: t.TempDir()}
}

// location is kubeconform's -schema-location for these schemas.
func (s *k8sSchemas) location() string {
	return filepath.Join(s.dir, "{{ .ResourceKind }}{{ .KindSuffix }}.json")
}

// write writes the schema of every kind among objs that is not written
// yet: the kind's OpenAPI schema with every schema of its API group
// beside it as definitions, made strict (additionalProperties false on
// every object that lists its properties), named as kubeconform looks
// for it (service-v1.json, statefulset-apps-v1.json).
func (s *k8sSchemas) write(t *testing.T, objs []manifest) {
	t.Helper()
	for _, m := range objs {
		apiVersion, _ := m["apiVersion"].(string)
		group, version, found := strings.Cut(apiVersion, "/")
		specFile, suffix := "apis__"+group+"__"+version+"_openapi.json", "-"+strings.Split(group, ".")[0]+"-"+version
		if !found {
			group, version = "", apiVersion
			specFile, suffix = "api__"+version+"_openapi.json", "-"+version
		}
		path := filepath.Join(s.dir, strings.ToLower(m.kind())+suffix+".json")
		if _, err := os.Stat(path); err == nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.specDir, specFile))
		if err != nil {
			t.Fatalf("no OpenAPI description of %s in Kubernetes %s: %v", apiVersion, kubernetesVersion, err)
		}
		var spec struct {
			Components struct {
				Schemas map[string]map[string]any
			}
		}
		if err := json.Unmarshal(b, &spec); err != nil {
			t.Fatal(err)
		}
		var kindSchema string
		for name, sch := range spec.Components.Schemas {
			gvks, _ := sch["x-kubernetes-group-version-kind"].([]any)
			for _, gvk := range gvks {
				if dig(gvk, "group") == group && dig(gvk, "version") == version && dig(gvk, "kind") == m.kind() {
					kindSchema = name
				}
			}
		}
		if kindSchema == "" {
			t.Fatalf("Kubernetes %s describes no %s %s", kubernetesVersion, apiVersion, m.kind())
		}
		defs := map[string]any{}
		for name, sch := range spec.Components.Schemas {
			defs[name] = strictSchema(sch)
		}
		doc := map[string]any{
			"$schema":     "http://json-schema.org/draft-07/schema#",
			"definitions": defs,
			"allOf":       []any{map[string]any{"$ref": "#/definitions/" + kindSchema}},
		}
		out, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		out = bytes.ReplaceAll(out, []byte(`"#/components/schemas/`), []byte(`"#/definitions/`))
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// strictSchema returns v with additionalProperties false added to every
// object schema that lists its properties and says nothing of others.
func strictSchema(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x)+1)
		for k, e := range x {
			out[k] = strictSchema(e)
		}
		if _, ok := x["properties"].(map[string]any); ok {
			if _, set := x["additionalProperties"]; !set {
				out["additionalProperties"] = false
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = strictSchema(e)
		}
		return out
	}
	return v
}
