// Package datadir manages the files a node keeps in its data directory: the
// generated signing secret, the node id and the public URL the server last
// served, so that `switchboard token` next to a default server just works,
// and the dashboard's login link printed at start (mode 0600).
package datadir

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// File names inside the data directory.
const (
	SecretFile    = "secret"
	NodeIDFile    = "node-id"
	PublicURLFile = "public-url"
	LoginLinkFile = "login-link"
)

// Ensure creates dir (mode 0700) if it does not exist.
func Ensure(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	return nil
}

// LoadOrCreateSecret returns the secret kept in dir, generating 32 random
// bytes (base64url text, file mode 0600) on first use.
func LoadOrCreateSecret(dir string) ([]byte, error) {
	return loadOrCreate(dir, SecretFile, func() string {
		var b [32]byte
		_, _ = rand.Read(b[:])
		return base64.RawURLEncoding.EncodeToString(b[:])
	})
}

// LoadSecret returns the secret kept in dir without creating one.
func LoadSecret(dir string) ([]byte, error) {
	return ReadSecretFile(filepath.Join(dir, SecretFile))
}

// ReadSecretFile reads a secret from path, trimming surrounding white space.
func ReadSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("datadir: read secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil, fmt.Errorf("datadir: secret file %s is empty", path)
	}
	return []byte(s), nil
}

// LoadOrCreateNodeID returns the node id kept in dir, generating one
// ("n" and 8 hex digits) on first use.
func LoadOrCreateNodeID(dir string) (string, error) {
	b, err := loadOrCreate(dir, NodeIDFile, func() string {
		var b [4]byte
		_, _ = rand.Read(b[:])
		return "n" + hex.EncodeToString(b[:])
	})
	return string(b), err
}

// WritePublicURL records the public URL the server in dir serves.
func WritePublicURL(dir, url string) error {
	return writeFileAtomic(filepath.Join(dir, PublicURLFile), []byte(url+"\n"), 0o644)
}

// ReadPublicURL returns the public URL recorded in dir, or "" if none is.
func ReadPublicURL(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, PublicURLFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("datadir: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// WriteLoginLink keeps the dashboard's one-time login link in dir (file
// mode 0600 from its creation: the link is a credential) and returns the
// file's path.
func WriteLoginLink(dir, link string) (string, error) {
	path := filepath.Join(dir, LoginLinkFile)
	return path, writeFileAtomic(path, []byte(link+"\n"), 0o600)
}

func loadOrCreate(dir, name string, generate func() string) ([]byte, error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if s == "" {
			return nil, fmt.Errorf("datadir: %s is empty; delete it to generate a new one", path)
		}
		return []byte(s), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	if err := Ensure(dir); err != nil {
		return nil, err
	}
	v := generate()
	// O_EXCL: if two processes start at once, one wins and the other reads
	// what it wrote.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return loadOrCreate(dir, name, generate)
	}
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	if _, err := f.WriteString(v + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("datadir: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("datadir: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	return []byte(v), nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("datadir: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("datadir: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	return nil
}
