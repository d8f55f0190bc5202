package agent

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// TestStatusEndpoints: /status and /metrics show every link's state and
// never a token.
func TestStatusEndpoints(t *testing.T) {
	r := startRelay(t)
	tokFile := r.tokenFile("lab/*")
	tok, _ := os.ReadFile(tokFile)
	ln := listenLocal(t)
	a := runAgent(t, &Config{URL: r.URL, TokenFile: tokFile, Streams: []StreamConfig{
		{Name: "ctl", Kind: KindTCP, Topic: "lab/ctl", Addr: ln.Addr().String()},
		{Name: "cams", Kind: KindHTTPPush, Listen: "127.0.0.1:0", Feeds: []FeedConfig{{Name: "v0", Topic: "lab/v0"}}},
		{Name: "ssh", Kind: KindShell, Topic: "lab/ssh", Addr: "127.0.0.1:22", TokenFile: writeFile(t, "shell", "not.a.token")},
	}}, Options{})
	accept(t, ln)
	wait.For(t, "links up", func() bool {
		return status(t, a, "ctl").Connected && status(t, a, "cams/v0").Connected && status(t, a, "ssh").LastError != ""
	})
	srv := httptest.NewServer(a.StatusHandler())
	defer srv.Close()

	body := get(t, srv.URL+"/status")
	var doc struct {
		Links []LinkStatus `json:"links"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Links) != 3 || doc.Links[0].Name != "ctl" || doc.Links[1].Name != "cams/v0" || doc.Links[2].Kind != "shell" {
		t.Fatalf("links %+v", doc.Links)
	}
	if !doc.Links[0].Connected || doc.Links[0].Local == nil || !*doc.Links[0].Local.Connected {
		t.Fatalf("ctl %+v", doc.Links[0])
	}
	if !strings.Contains(doc.Links[2].LastError, "token_malformed") {
		t.Fatalf("ssh last error %q", doc.Links[2].LastError)
	}
	metrics := get(t, srv.URL+"/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	if fams, err := parser.TextToMetricFamilies(strings.NewReader(metrics)); err != nil || len(fams) != 11 {
		t.Fatalf("metrics do not parse: %d families, %v", len(fams), err)
	}
	for _, want := range []string{
		`switchboard_host_link_up{link="ctl",stream="ctl",kind="tcp",topic="lab/ctl"} 1`,
		`switchboard_host_link_up{link="ssh",stream="ssh",kind="shell",topic="lab/ssh"} 0`,
		`switchboard_host_bytes_total{link="cams/v0",stream="cams",kind="http-push",topic="lab/v0",direction="to_relay"} 0`,
		`switchboard_host_local_up{link="ctl",stream="ctl",kind="tcp",topic="lab/ctl"} 1`,
		`# TYPE switchboard_host_reconnects_total counter`,
		`switchboard_host_sessions_total{link="ssh",stream="ssh",kind="shell",topic="lab/ssh"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s\n%s", want, metrics)
		}
	}
	for _, out := range []string{body, metrics} {
		if strings.Contains(out, strings.TrimSpace(string(tok))) || strings.Contains(out, "not.a.token") {
			t.Fatal("a token appears in the status")
		}
	}
}
