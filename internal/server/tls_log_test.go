package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// selfSigned writes a certificate for 127.0.0.1 and its key to dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "switchboard test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	s := startServer(t, func(c *Config, d *Deps) { c.TLSCert, c.TLSKey = certFile, keyFile })
	if !strings.HasPrefix(s.url, "https://127.0.0.1:") {
		t.Fatalf("public URL %q", s.url)
	}
	opts := &client.Options{HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok := s.token("secure", "read", "write")
	uri, err := client.Access(ctx, s.url, "secure", tok, opts)
	if err != nil || !strings.HasPrefix(uri, "wss://") {
		t.Fatalf("access: %q %v", uri, err)
	}
	a, err := client.DialURI(ctx, uri, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := client.Dial(ctx, s.url, "secure", tok, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	wait.For(t, "connections", func() bool { return s.Relay().Stats().Connections == 2 })
	a.Write(ctx, client.Text, []byte("over tls"))
	if _, data, err := b.Read(ctx); err != nil || string(data) != "over tls" {
		t.Fatalf("%q %v", data, err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogsHoldNoSecrets: at debug level, with successful and refused
// requests, the log names paths but never a token or a code.
func TestLogsHoldNoSecrets(t *testing.T) {
	var logs lockedBuffer
	s := startServer(t, func(c *Config, d *Deps) {
		d.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	tok := s.token("demo", "read", "write")
	uri := s.access("demo", tok)
	code := strings.SplitN(uri, "code=", 2)[1]
	c, err := client.DialURI(context.Background(), uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	wsStatus(t, uri, nil) // reused code: refused
	req, _ := http.NewRequest(http.MethodPost, s.url+"/session/other", nil)
	req.Header.Set("Authorization", "Bearer "+tok) // topic mismatch: refused
	do(t, req)
	wait.For(t, "requests logged", func() bool { return strings.Count(logs.String(), `"msg":"request"`) >= 4 })
	out := logs.String()
	random := strings.SplitN(code, ".", 2)[0]
	if strings.Contains(out, random) || strings.Contains(out, tok) || strings.Contains(out, strings.Split(tok, ".")[2]) {
		t.Fatalf("log holds a code or token:\n%s", out)
	}
	if !strings.Contains(out, `"path":"/session/demo"`) {
		t.Fatalf("log does not name the path:\n%s", out)
	}
}
